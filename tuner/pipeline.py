"""`tuner run-all`: search, finalize, ensemble and export one study inside one time budget.

The budget is shared in order: the search gets `SEARCH_SHARE` of it (its timeout, with no trial
started that cannot finish); finalize refits the top few; the ensemble stage gets as many
out-of-fold folds and members per family as the time left allows, judged by the trials' own
recorded durations; export writes the chosen blend. Each stage's seconds are reported, so an
overrun is visible rather than hidden.

Run again on a finished study, it adds no test look: a study whose trials have not changed since
its finalize shows the stored finalize and ensemble results and re-exports nothing new. With new
trials, the stored test look is stale and `--force` is needed to look again (counted).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from tuner.config import load_study_file
from tuner.models import FAMILIES
from tuner.runner import RunResult
from tuner.sealed import ATTR
from tuner.storage import load_existing
from tuner.study import run_study

SEARCH_SHARE = 0.4
FINALIZE_TOP = 3
ENSEMBLE_FIXED_S = 8.0  # scoring every member and blend on test, saving the blends, MLflow run and plots
DENSE_EPOCH_S = 0.25  # a dense network's epoch on a small table on CPU (docs/families.md), when none was timed


@dataclass
class RunAllResult:
    run: RunResult
    finalize: Any  # finalize.FinalizeReport
    build: dict[str, Any]
    export: Any  # export.ExportResult, or None when the stored export is already this build's
    trials: int
    reused: list[str] = field(default_factory=list)  # stages shown from an earlier run-all, not redone
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_all(study_file: str | Path, budget: float | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, ensembles_root: str | Path | None = None, force: bool = False,
            on_step: Callable[[str], None] = lambda message: None) -> RunAllResult:
    """The README's main job in one call; `budget` in seconds (None: the study file's trial budget)."""
    from tuner.ensemble.build import build_ensemble
    from tuner.ensemble.store import ensembles_root as root_of, read_build
    from tuner.errors import TunerError
    from tuner.export import MANIFEST, export_ensemble
    from tuner.finalize import FinalizeReport, finalize_study

    config, _ = load_study_file(study_file)
    name = config.name
    started = time.monotonic()
    seconds: dict[str, float] = {}
    reused: list[str] = []

    def left() -> float | None:
        return None if budget is None else budget - (time.monotonic() - started)

    search_timeout = budget * SEARCH_SHARE if budget is not None else config.budget.timeout
    on_step(f"search: up to {config.budget.trials} trials" + (f" in {search_timeout:.0f} s" if search_timeout else ""))
    run = run_study(study_file, storage_url, tracking_uri, timeout=search_timeout)
    seconds["search"] = time.monotonic() - started

    mark = time.monotonic()
    study = load_existing(name, storage_url)
    stored = study.user_attrs.get(ATTR + "finalize")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if stored and not force and stored.get("trials_complete") == complete:
        on_step("finalize: already done for these trials; shown again without a new test look")
        report = FinalizeReport.from_record(stored)
        reused.append("finalize")
    else:
        on_step("finalize: the top configurations scored once on the sealed test split")
        report = finalize_study(name, storage_url, tracking_uri, top=FINALIZE_TOP, force=force)
    seconds["finalize"] = time.monotonic() - mark

    mark = time.monotonic()
    build = None
    if "finalize" in reused:
        try:
            build = read_build(name, ensembles_root)
        except TunerError:
            build = None
        if build is not None and build.get("split_digest") != study.user_attrs[ATTR + "split"]["digest"]:
            build = None
    if build is not None:
        on_step("ensemble: already built from these trials; shown again without a new test look")
        reused.append("ensemble")
    else:
        plan = plan_ensemble(name, storage_url, left(), config.budget.epochs)
        on_step(f"ensemble: {plan.describe()}")
        build = build_ensemble(name, [name], storage_url, tracking_uri, per_family=plan.per_family, folds=plan.folds,
                               families=plan.families, wide_deep=plan.wide_deep,
                               root=ensembles_root, on_step=on_step)
    seconds["ensemble"] = time.monotonic() - mark

    mark = time.monotonic()
    manifest = root_of(ensembles_root) / name / MANIFEST
    exported = None
    if manifest.is_file() and json.loads(manifest.read_text()).get("built_at") == build.get("built_at"):
        on_step(f"export: {manifest.parent} already holds this build's blend")
        reused.append("export")
    else:
        on_step(f"export: blend {build['chosen']!r} as an MLflow pyfunc model")
        exported = export_ensemble(name, tracking_uri=tracking_uri, root=ensembles_root)
    seconds["export"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    counted = sum(n for state, n in run.counts.items() if state in ("COMPLETE", "PRUNED", "FAIL"))
    return RunAllResult(run, report, build, exported, counted, reused, seconds)


@dataclass(frozen=True)
class EnsemblePlan:
    """What the ensemble stage builds: folds, members per family, which families, and whether the
    jointly trained wide-and-deep blend is affordable; `seconds` is the expected cost."""

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
    scoring, saving and logging cost `ENSEMBLE_FIXED_S`. When even 2 folds of one member per family do not fit, the
    wide-and-deep blend goes first, then the slowest families. Without a budget: 5 folds, 2 per
    family, everything.
    """
    if seconds_left is None:
        return EnsemblePlan(5, 2, None, True, float("nan"))
    study = load_existing(name, storage_url)
    per_family_s: dict[str, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        per_family_s.setdefault(t.user_attrs.get("family", "?"), []).append(t.user_attrs.get("duration_s", 1.0))
    medians = {family: statistics.median(durations) for family, durations in per_family_s.items()} or {"?": 1.0}
    keras = [s for family, s in medians.items() if family in FAMILIES and FAMILIES[family].uses_keras]
    deep_s = max(keras, default=epochs * DENSE_EPOCH_S)
    cheapest_first = sorted(medians, key=medians.get)

    def plan(folds: int, per_family: int, families: list[str], wide_deep: bool) -> EnsemblePlan:
        fits = per_family * sum(medians[f] for f in families) + (deep_s if wide_deep else 0.0)
        every = len(families) == len(cheapest_first)
        return EnsemblePlan(folds, per_family, None if every else tuple(families), wide_deep,
                            ENSEMBLE_FIXED_S + (folds + 1) * fits)

    richest_first = [plan(folds, per_family, cheapest_first, True)
                     for folds, per_family in ((5, 2), (3, 2), (3, 1), (2, 1))]
    richest_first += [plan(2, 1, cheapest_first[:n], False) for n in range(len(cheapest_first), 0, -1)]
    # the first that fits; when none does, the cheapest, whose expected cost the caller prints
    return next((p for p in richest_first if p.seconds <= seconds_left), richest_first[-1])
