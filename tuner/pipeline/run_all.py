"""`tuner run-all`: the pipeline's stages in one place, inside one time budget counted from process start.

`STAGES` lists them, each with what it reads, what it writes and what it costs. A K-fold study (the
default split) bags every trial, so after the search nothing is fitted again:

    search    reads the study file and the sealed split's search rows; writes trials, each with
              its out-of-fold predictions and fold models (tuner.study.trial_bags)
    finalize  reads the top trials' bags and the test rows (one counted look); writes the
              validation-optimism report to the study and MLflow
    ensemble  reads every trial's out-of-fold predictions, the picked members' fold models and the
              test rows (one counted look); writes ensembles/.built/NAME and its MLflow run
    export    reads the chosen blend; writes ensembles/NAME, a registered MLflow pyfunc model
    plots     reads the trials and their curves; writes the study run's plots in MLflow

With `--budget B` the clock starts when the process did (imports count): the search gets what the
later stages leave, their expected seconds being measured costs (`benchmarks/stages.py`) scaled by
the table's rows; a stage that no longer fits when its turn comes is skipped whole, and the result
says which and why. The ensemble stage is never skipped and always keeps the search's best trial
(the best single member is one of its candidates), so the export is never below the best trial
out of fold. A holdout study (`split.validation_fraction`) has no bags: its ensemble stage refits
members out of fold, as many as `plan_ensemble` says the time left pays for.

Run again on a finished study, it adds no test look: once a study is finalized its search stays
closed, and the stored finalize, ensemble and export are shown again. `--force` searches on (up to
the study's trial budget) and looks at the test split again (counted).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from tuner.study.trial_attrs import DURATION_ATTR, FAMILY_ATTR
from tuner.search import runner
from tuner.core.config import load_study_file
from tuner.models import FAMILIES
from tuner.search.runner import RunResult
from tuner.study.sealed import ATTR, load_inputs, open_sealed
from tuner.study.storage import find_study, load_existing, normalize_url, open_storage, resolve_storage_url

FINALIZE_TOP = 3
ENSEMBLE_FIXED_S = 8.0  # a holdout study's build: scoring every member and blend on test, saving, MLflow, plots
DENSE_EPOCH_S = 0.25  # a dense network's epoch on a small table on CPU (docs/families.md), when none was timed
KERAS_BAGS_S = 12.0  # TensorFlow's import and loading, predicting and saving the Keras bags a blend picks
# (churn at --budget 300: an ensemble stage of 21 s with dense bags against 2-7 s without)
KERAS_RESERVE_FROM_S = 120.0  # budgets from here reserve KERAS_BAGS_S; at 60 s few Keras bags finish (1-7 s measured)
SAFETY_S = 2.0  # kept back from the search for the interpreter's exit (MLflow and Optuna close their stores)


@dataclass(frozen=True)
class Stage:
    """One step of `run-all`: its inputs and outputs in words, and its measured cost on two cores
    (`fixed_s` plus `per_1k_rows_s` for every thousand rows of the table; `benchmarks/quality.py`
    prints each stage's seconds). The classes do not scale it: charged per class beyond the first,
    land_use (4 classes) and digits (10) were given 19-23 s after the search and used 10."""

    name: str
    reads: str
    writes: str
    fixed_s: float
    per_1k_rows_s: float

    def expected_seconds(self, rows: int) -> float:
        return self.fixed_s + self.per_1k_rows_s * rows / 1000


STAGES = (
    Stage("search", "the study file; the sealed split's search rows",
          "trials with their out-of-fold predictions and fold models", 0.0, 0.0),
    Stage("finalize", f"the top {FINALIZE_TOP} trials' bags; the sealed test rows (one counted look)",
          "the finalize report (study attributes, MLflow run `finalize`)", 1.5, 0.2),
    Stage("ensemble", "every trial's out-of-fold predictions; the picked members' bags; the test rows (one counted look)",
          "ensembles/.built/NAME and the MLflow run `ensemble/NAME`", 2.0, 0.6),
    Stage("export", "the chosen blend", "ensembles/NAME (MLflow pyfunc), a registered model version @champion", 1.5, 0.1),
    Stage("plots", "the study's trials and curves", "the study run's plots in MLflow (`tuner study plots` redraws them)",
          3.0, 0.0),
)


@dataclass
class RunAllResult:
    run: RunResult
    finalize: Any  # finalize.FinalizeReport, or None when the budget skipped it
    build: dict[str, Any]
    export: Any  # export.ExportResult, or None when the stored export is already this build's
    trials: int
    reused: list[str] = field(default_factory=list)  # stages shown from an earlier run-all, not redone
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why the budget left it out


@dataclass
class Clock:
    """Seconds left of the budget, counted from `started_at` (a `time.time()` value: process start)."""

    budget: float | None
    started_at: float

    def elapsed(self) -> float:
        return time.time() - self.started_at

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.elapsed()


def run_all(study_file: str | Path, budget: float | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, ensembles_root: str | Path | None = None, force: bool = False,
            on_step: Callable[[str], None] = lambda message: None, started_at: float | None = None) -> RunAllResult:
    """The README's main job in one call; `budget` in seconds (None: the study file's trial budget),
    counted from `started_at` (the CLI passes its process's start time; default: now)."""
    config, base_dir = load_study_file(study_file)
    clock = Clock(budget, time.time() if started_at is None else started_at)
    inputs = load_inputs(config, base_dir)
    rows = len(inputs[0].y)
    after_search = {stage.name: stage.expected_seconds(rows) for stage in STAGES[1:]}
    if budget is not None and budget >= KERAS_RESERVE_FROM_S and any(FAMILIES[f].uses_keras for f in config.families):
        after_search["ensemble"] += KERAS_BAGS_S  # long enough for Keras bags to finish, and to be picked
    seconds: dict[str, float] = {}

    mark = time.monotonic()
    if not force and _finalized_before(config.name, storage_url):
        on_step("search: closed, the study was finalized by an earlier run (--force searches on and looks again)")
        sealed = open_sealed(config.name, storage_url)
        run = runner.summarize_run(sealed, config.budget.trials, runner.progress_of(sealed.study, config.budget.trials).done,
                                   0.0)
        result = RunAllResult(run, None, {}, None, _counted(run), stage_seconds=seconds)
        seconds["search"] = time.monotonic() - mark
        _finalize(result, config.name, storage_url, tracking_uri, force, clock, {}, on_step)
        _ensemble(result, config, storage_url, tracking_uri, ensembles_root, clock, 0.0, on_step)
        _export(result, config.name, tracking_uri, ensembles_root, on_step)
        seconds["total"] = clock.elapsed()
        return result
    deadline = None
    if budget is not None:
        deadline = mark + clock.left() - sum(after_search.values()) - SAFETY_S
        on_step(f"search: up to {config.budget.trials} trials until {max(deadline - mark, 0):.0f} s from now "
                f"(the budget's other stages need about {sum(after_search.values()):.0f} s)")
    else:
        on_step(f"search: up to {config.budget.trials} trials")
    if budget is None:
        from tuner.pipeline.study_run import run_study  # the runner with the dashboard subscribed: plots after the search

        run = run_study(study_file, storage_url, tracking_uri, timeout=config.budget.timeout, inputs=inputs)
    else:  # the study's plots come last, if time is left (`_plots`): no dashboard subscribed
        run = runner.run_study(study_file, storage_url, tracking_uri, deadline=deadline, inputs=inputs)
    seconds["search"] = time.monotonic() - mark
    if budget is not None and run.best_value is None:
        from tuner.core.errors import TunerError

        raise TunerError(f"the budget left no time for a single complete trial ({clock.elapsed():.0f} s of "
                         f"{budget:.0f} s went to starting up and searching); raise --budget")
    result = RunAllResult(run, None, {}, None, _counted(run), stage_seconds=seconds)
    later = {name: s for name, s in after_search.items() if name != "plots"}
    _finalize(result, config.name, storage_url, tracking_uri, force, clock, later, on_step)
    _ensemble(result, config, storage_url, tracking_uri, ensembles_root, clock,
              after_search["ensemble"] + after_search["export"], on_step)
    _export(result, config.name, tracking_uri, ensembles_root, on_step)
    if budget is not None:
        _plots(result, config.name, storage_url, tracking_uri, clock, after_search["plots"], on_step)
    seconds["total"] = clock.elapsed()
    return result


def _finalized_before(name: str, storage_url: str | None) -> bool:
    """Whether an earlier run finalized this study (its test split was looked at): then a plain
    rerun shows what it stored instead of searching on. A store not yet made is not created here."""
    url = normalize_url(resolve_storage_url(storage_url))
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and not Path(url.removeprefix(scheme).split("?")[0]).exists():
            return False
    study = find_study(open_storage(url), name)
    return study is not None and ATTR + "finalize" in study.user_attrs


def _finalize(result: RunAllResult, name: str, storage_url: str | None, tracking_uri: str | None, force: bool,
              clock: Clock, after_search: dict[str, float], on_step: Callable[[str], None]) -> None:
    from tuner.evaluate.finalize import FinalizeReport, finalize_study

    mark = time.monotonic()
    study = load_existing(name, storage_url)
    stored = study.user_attrs.get(ATTR + "finalize")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    left = clock.left()
    if stored and not force and stored.get("trials_complete") == complete:
        on_step("finalize: already done for these trials; shown again without a new test look")
        result.finalize = FinalizeReport.from_record(stored)
        result.reused.append("finalize")
    elif left is not None and left < sum(after_search.values()):
        result.skipped["finalize"] = (f"{max(left, 0):.0f} s were left and finalize, ensemble and export need about "
                                      f"{sum(after_search.values()):.0f} s; the ensemble build still scores the "
                                      "best single member on the test split")
        on_step(f"finalize: skipped ({result.skipped['finalize']})")
    else:
        on_step("finalize: the top configurations scored once on the sealed test split")
        result.finalize = finalize_study(name, storage_url, tracking_uri, top=FINALIZE_TOP, force=force)
    result.stage_seconds["finalize"] = time.monotonic() - mark


def _ensemble(result: RunAllResult, config: Any, storage_url: str | None, tracking_uri: str | None,
              ensembles_root: str | Path | None, clock: Clock, ensemble_s: float, on_step: Callable[[str], None]) -> None:
    from tuner.ensemble.build import build_ensemble
    from tuner.ensemble.store import read_build
    from tuner.core.errors import TunerError

    mark = time.monotonic()
    name = config.name
    build = None
    if "finalize" in result.reused:
        try:
            build = read_build(name, ensembles_root)
        except TunerError:
            build = None
        split_digest = load_existing(name, storage_url).user_attrs[ATTR + "split"]["digest"]
        if build is not None and build.get("split_digest") != split_digest:
            build = None
    if build is not None:
        on_step("ensemble: already built from these trials; shown again without a new test look")
        result.reused.append("ensemble")
    elif config.split.cross_validated:
        bags = plan_bags(name, storage_url, clock.left(), ensemble_s)
        if bags.families is not None:
            result.skipped["keras bags"] = (f"{max(clock.left(), 0):.0f} s were left and Keras bags cost about "
                                            f"{KERAS_BAGS_S:.0f} s more; the search's best trial is not one")
        on_step("ensemble: selection over every bagged trial's out-of-fold predictions, nothing refitted"
                + ("" if bags.families is None else f" (Keras bags left out: {result.skipped['keras bags']})"))
        build = build_ensemble(name, [name], storage_url, tracking_uri, root=ensembles_root, on_step=on_step,
                               families=bags.families, rebuild_s=bags.rebuild_s)
        if build.get("left_out_for_time"):
            result.skipped["rebuilds"] = (f"{len(build['left_out_for_time'])} trial(s) whose fold models were let go "
                                          f"would take longer to rebuild than the {bags.rebuild_s:.0f} s the budget leaves for it")
    else:
        plan = plan_ensemble(name, storage_url, clock.left(), config.budget.epochs)
        on_step(f"ensemble: {plan.describe()}")
        build = build_ensemble(name, [name], storage_url, tracking_uri, per_family=plan.per_family, folds=plan.folds,
                               families=plan.families, wide_deep=plan.wide_deep, root=ensembles_root, on_step=on_step)
    result.build = build
    result.stage_seconds["ensemble"] = time.monotonic() - mark


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
    keras = {f for f in families if f in FAMILIES and FAMILIES[f].uses_keras}
    kept = families - keras if keras and seconds_left < expected_s + KERAS_BAGS_S else None
    if kept is not None and study.best_trial.user_attrs.get(FAMILY_ATTR) in keras:
        kept = None  # the search's best always reaches the export
    # from KERAS_RESERVE_FROM_S `expected_s` already holds one KERAS_BAGS_S; charging it again here keeps
    # room for the many Keras bags a long search leaves (churn at 300 s: 10 dense bags, a 13 s stage)
    keras_s = KERAS_BAGS_S if keras and kept is None else 0.0
    return BagPlan(kept, max(seconds_left - expected_s - keras_s, 0.0))


def _export(result: RunAllResult, name: str, tracking_uri: str | None, ensembles_root: str | Path | None,
            on_step: Callable[[str], None]) -> None:
    from tuner.ensemble.store import ensembles_root as root_of
    from tuner.serve.export import MANIFEST, export_ensemble

    mark = time.monotonic()
    manifest = root_of(ensembles_root) / name / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("built_at") == result.build.get("built_at"):
        on_step(f"export: {manifest.parent} already holds this build's blend")
        result.reused.append("export")
    else:
        on_step(f"export: blend {result.build['chosen']!r} as an MLflow pyfunc model")
        result.export = export_ensemble(name, tracking_uri=tracking_uri, root=ensembles_root)
    result.stage_seconds["export"] = time.monotonic() - mark


def _plots(result: RunAllResult, name: str, storage_url: str | None, tracking_uri: str | None, clock: Clock,
           expected: float, on_step: Callable[[str], None]) -> None:
    """The study's plots last, under a budget: the model matters more than its pictures."""
    from tuner.reporting.dashboard import refresh_plots

    left = clock.left()
    if left < expected + SAFETY_S:
        result.skipped["plots"] = (f"{max(left, 0):.0f} s were left and drawing needs about {expected:.0f} s, "
                                   f"with {SAFETY_S:.0f} s kept for the exit; "
                                   f"`tuner study plots {name}` draws them")
        on_step(f"plots: skipped ({result.skipped['plots']})")
        return
    mark = time.monotonic()
    on_step("plots: the study's history, scores by family and curves on its MLflow run")
    refresh_plots(name, storage_url, tracking_uri)
    result.stage_seconds["plots"] = time.monotonic() - mark


def _counted(run: RunResult) -> int:
    return sum(n for state, n in run.counts.items() if state in ("COMPLETE", "PRUNED", "FAIL"))


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
    keras = [s for family, s in medians.items() if family in FAMILIES and FAMILIES[family].uses_keras]
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
