"""`run-all`'s time: the budget's clock and what each stage after the search is planned to cost.

The clock counts from process start (imports count); the search gets what the later stages'
expected seconds leave (`reserve_after_search`, `Clock.deadline`), and the two ensemble plans size
the ensemble stage to the time left: `plan_bags` for a K-fold study (which bags a blend may pick,
how long rebuilds may take), `plan_ensemble` for a holdout study (how many members to refit);
`plan_refit` says whether the export may train the chosen members again on every row. The
constants are measured costs on two cores (`benchmarks/quality.py`, `benchmarks/throughput.py`).
Kept apart from `tuner.search.time_budget`, which spends the search's own share trial by trial.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from optuna.trial import TrialState

from tuner.models import FAMILIES
from tuner.study.sealed import ATTR
from tuner.study.storage import load_existing
from tuner.study.trial_attrs import DURATION_ATTR, FAMILY_ATTR

ENSEMBLE_FIXED_S = 8.0  # a holdout study's build: scoring every member and blend on test, saving, MLflow, plots
DENSE_EPOCH_S = 0.25  # a dense network's epoch on a small table on CPU (docs/families.md), when none was timed
KERAS_BAGS_S = 12.0  # TensorFlow's import and loading, predicting and saving the Keras bags a blend picks
# (churn at --budget 300: an ensemble stage of 21 s with dense bags against 2-7 s without)
KERAS_RESERVE_FROM_S = 120.0  # budgets from here reserve KERAS_BAGS_S; at 60 s few Keras bags finish (1-7 s measured)
REFIT_SHARE = 0.1  # of a budget, kept from the search for the export's refit on every row (its members are
# not known before the search; a member's refit costs about its trial's fit seconds x every row / search rows)
SAFETY_S = 2.0  # kept back from the search for the process's end: the CLI folds the SQLite logs and ends at once
# (`tuner.cli.shared.ExitPlan.fast_exit`): under 0.5 s measured, against 3-8 s of interpreter teardown before


def cpu_seconds() -> float:
    """User + system seconds of this process and every process under it, live (fold workers) or ended."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, and those of children already waited for
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # ended between the listing and the read
            continue
    return total


@dataclass
class Clock:
    """Seconds left of the budget, counted from `started_at` (a `time.time()` value: process start)."""

    budget: float | None
    started_at: float

    def elapsed(self) -> float:
        return time.time() - self.started_at

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.elapsed()

    def deadline(self, keep_s: float) -> float:
        """The `time.monotonic()` value when only `keep_s` seconds of the budget are left."""
        return time.monotonic() + self.left() - keep_s


def reserve_after_search(expected: dict[str, float], budget: float | None, keras: bool) -> dict[str, float]:
    """The seconds kept from the search for each later stage: its `expected` seconds on this table,
    with `keras` (the study searches a Keras family) the Keras bags a long budget pays for, and
    under a budget `REFIT_SHARE` of it for the export's refit on every row (`refit`)."""
    reserved = dict(expected)
    if budget is not None:
        reserved["refit"] = REFIT_SHARE * budget
    if budget is not None and budget >= KERAS_RESERVE_FROM_S and keras:
        reserved["ensemble"] += KERAS_BAGS_S  # long enough for Keras bags to finish, and to be picked
    return reserved


@dataclass(frozen=True)
class BagPlan:
    """What a K-fold study's blend may pick from in the time left: `families` (None: all of them)
    and `rebuild_s`, the seconds that rebuilding let-go bags may take (None: no bound)."""

    families: set[str] | None
    rebuild_s: float | None


def plan_bags(name: str, storage_url: str | None, seconds_left: float | None, expected_s: float) -> BagPlan:
    """Keras bags cost `KERAS_BAGS_S` more than `expected_s`, so when time is short they go first,
    unless the search's best trial is one; what is left after that pays for rebuilding bags whose
    fold models were let go (a dense bag refits for as long as its trial took: 17-30 s on churn)."""
    if seconds_left is None:
        return BagPlan(None, None)
    study = load_existing(name, storage_url)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    families = {t.user_attrs.get(FAMILY_ATTR) for t in complete}
    keras = {f for f in families if f in FAMILIES and FAMILIES[f].uses_tensorflow}
    kept = families - keras if keras and seconds_left < expected_s + KERAS_BAGS_S else None
    if kept is not None and study.best_trial.user_attrs.get(FAMILY_ATTR) in keras:
        kept = None  # the search's best always reaches the export
    # from KERAS_RESERVE_FROM_S `expected_s` already holds one KERAS_BAGS_S; charging it again here keeps
    # room for the many Keras bags a long search leaves (churn at 300 s: 10 dense bags, a 13 s stage)
    keras_s = KERAS_BAGS_S if keras and kept is None else 0.0
    return BagPlan(kept, max(seconds_left - expected_s - keras_s, 0.0))


@dataclass(frozen=True)
class EnsemblePlan:
    """What a holdout study's ensemble stage builds: folds, members per family, which families, and
    whether the jointly trained wide-and-deep blend is affordable; `seconds` is the expected cost."""

    folds: int
    per_family: int
    families: tuple[str, ...] | None  # None: every family in the study
    wide_deep: bool
    seconds: float

    def describe(self) -> str:
        which = "every family" if self.families is None else ", ".join(self.families)
        return (f"{self.per_family} member(s) per family ({which}), {self.folds}-fold out-of-fold predictions, "
                f"wide-and-deep blend {'included' if self.wide_deep else 'left out'}")


def plan_ensemble(name: str, storage_url: str | None, seconds_left: float | None, epochs: int) -> EnsemblePlan:
    """The richest ensemble the time left pays for, judged by the trials' own recorded durations.

    Each member costs about (folds + 1) fits of its family's median trial time (K out-of-fold fits
    and the final refit); the wide-and-deep blend as much per fit as the slowest Keras family, or,
    with none searched, a dense network trained for `epochs` (the study's `budget.epochs`);
    scoring, saving and logging cost `ENSEMBLE_FIXED_S`. When even 2 folds of one member per
    family do not fit, the wide-and-deep blend goes first, then the slowest families, but never
    the family of the search's best trial. Without a budget: 5 folds, 2 per family, everything.
    """
    if seconds_left is None:
        return EnsemblePlan(5, 2, None, True, float("nan"))
    study = load_existing(name, storage_url)
    per_family_s: dict[str, list[float]] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in complete:
        per_family_s.setdefault(t.user_attrs.get(FAMILY_ATTR, "?"), []).append(t.user_attrs.get(DURATION_ATTR, 1.0))
    medians = {family: statistics.median(durations) for family, durations in per_family_s.items()} or {"?": 1.0}
    keras = [s for family, s in medians.items() if family in FAMILIES and FAMILIES[family].uses_tensorflow]
    deep_s = max(keras, default=epochs * DENSE_EPOCH_S)
    best_family = study.best_trial.user_attrs.get(FAMILY_ATTR, "?") if complete else next(iter(medians))
    kept_first = [best_family] + sorted((f for f in medians if f != best_family), key=medians.get)

    def plan(folds: int, per_family: int, families: list[str], wide_deep: bool) -> EnsemblePlan:
        fits = per_family * sum(medians[f] for f in families) + (deep_s if wide_deep else 0.0)
        every = len(families) == len(kept_first)
        return EnsemblePlan(folds, per_family, None if every else tuple(families), wide_deep,
                            ENSEMBLE_FIXED_S + (folds + 1) * fits)

    richest_first = [plan(folds, per_family, kept_first, True)
                     for folds, per_family in ((5, 2), (3, 2), (3, 1), (2, 1))]
    richest_first += [plan(2, 1, kept_first[:n], False) for n in range(len(kept_first), 0, -1)]
    # the first that fits; when none does, the cheapest (the best trial's family alone)
    return next((p for p in richest_first if p.seconds <= seconds_left), richest_first[-1])


def refit_seconds(name: str, storage_url: str | None, build: dict, mode: str = "bag") -> float:
    """What training the chosen blend's members again on every row costs (`tuner.serve.refit`):
    each member's recorded fit seconds (`duration_s`, all its folds), times the fits the refit
    makes over those its trial made, times every row over the search rows (unknown: too long)."""
    study = load_existing(name, storage_url)
    split = study.user_attrs[ATTR + "split"]
    chosen = set(build["blends"][build["chosen"]]["members"])
    numbers = {m["trial"] for m in build["members"] if m["label"] in chosen}
    durations = [t.user_attrs.get(DURATION_ATTR, float("inf")) for t in study.get_trials(deepcopy=False)
                 if t.number in numbers]
    folds = split.get("n_folds") or build.get("folds") or 5
    trial_fits = folds * split.get("n_repeats", 1) if split.get("n_folds") else 1
    fits = (folds if mode == "bag" else 1) / trial_fits
    return sum(durations) * fits * split["n_rows"] / (split["n_train"] + split["n_val"])


def plan_refit(name: str, storage_url: str | None, build: dict, seconds_left: float | None,
               export_s: float) -> tuple[str, str | None]:
    """The export's refit the time left pays for, besides the export's own `export_s`: a K-fold bag
    on every row, else one model per member, else none (the blend exported as scored); with the
    reason when it is not the bag."""
    if seconds_left is None:
        return "bag", None
    spare = seconds_left - export_s - SAFETY_S
    bag = refit_seconds(name, storage_url, build, "bag")
    if bag <= spare:
        return "bag", None
    single = refit_seconds(name, storage_url, build, "single")
    needed = f"refit on every row: a {bag:.0f} s bag needed, {max(spare, 0):.0f} s left"
    if single <= spare:
        return "single", f"{needed}; one model per member ({single:.0f} s) instead"
    return "none", f"{needed}; exported as scored"
