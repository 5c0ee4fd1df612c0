"""`tuner run-all`: search, finalize, ensemble and export one study inside one time budget.

The budget is shared in order: the search gets `SEARCH_SHARE` of it (its timeout, with no trial
started that cannot finish); finalize refits the top few; the ensemble stage gets as many
out-of-fold folds and members per family as the time left allows, judged by the trials' own
recorded durations; export writes the chosen blend. Each stage's seconds are reported, so an
overrun is visible rather than hidden.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from tuner.config import load_study_file
from tuner.study import RunResult, load_existing, run_study

SEARCH_SHARE = 0.55
FINALIZE_TOP = 3


@dataclass
class RunAllResult:
    run: RunResult
    finalize: Any  # finalize.FinalizeReport
    build: dict[str, Any]
    export: Any  # export.ExportResult
    trials: int
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_all(study_file: str | Path, budget: float | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, ensembles_root: str | Path | None = None, force: bool = False,
            on_step: Callable[[str], None] = lambda message: None) -> RunAllResult:
    """The README's main job in one call; `budget` in seconds (None: the study file's trial budget)."""
    from tuner.ensemble.build import build_ensemble
    from tuner.export import export_ensemble
    from tuner.finalize import finalize_study

    config, _ = load_study_file(study_file)
    name = config.name
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def left() -> float | None:
        return None if budget is None else budget - (time.monotonic() - started)

    search_timeout = budget * SEARCH_SHARE if budget is not None else config.budget.timeout
    on_step(f"search: up to {config.budget.trials} trials" + (f" in {search_timeout:.0f} s" if search_timeout else ""))
    run = run_study(study_file, storage_url, tracking_uri, timeout=search_timeout)
    seconds["search"] = time.monotonic() - started

    on_step("finalize: the top configurations scored once on the sealed test split")
    mark = time.monotonic()
    report = finalize_study(name, storage_url, tracking_uri, top=FINALIZE_TOP, force=force)
    seconds["finalize"] = time.monotonic() - mark

    folds, per_family = ensemble_size(name, storage_url, left())
    on_step(f"ensemble: {per_family} member(s) per family, {folds}-fold out-of-fold predictions")
    mark = time.monotonic()
    build = build_ensemble(name, [name], storage_url, tracking_uri, per_family=per_family, folds=folds,
                           root=ensembles_root, on_step=on_step)
    seconds["ensemble"] = time.monotonic() - mark

    on_step(f"export: blend {build['chosen']!r} as an MLflow pyfunc model")
    mark = time.monotonic()
    exported = export_ensemble(name, tracking_uri=tracking_uri, root=ensembles_root)
    seconds["export"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    counted = sum(n for state, n in run.counts.items() if state in ("COMPLETE", "PRUNED", "FAIL"))
    return RunAllResult(run, report, build, exported, counted, seconds)


def ensemble_size(name: str, storage_url: str | None, seconds_left: float | None) -> tuple[int, int]:
    """Folds and members per family the ensemble stage can afford, from the trials' own durations.

    A member costs about (folds + 1) fits of its median trial time, plus the wide-and-deep blend's
    (folds + 1) fits; without a time budget the defaults (5 folds, 2 per family) are used.
    """
    if seconds_left is None:
        return 5, 2
    study = load_existing(name, storage_url)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    families = {t.user_attrs.get("family") for t in complete}
    fit_s = statistics.median([t.user_attrs.get("duration_s", 1.0) for t in complete]) if complete else 1.0
    for folds, per_family in ((5, 2), (3, 2), (3, 1), (2, 1)):
        members = per_family * max(len(families), 1) + 1  # + the wide-and-deep blend
        if members * (folds + 1) * fit_s <= seconds_left * 0.8:
            return folds, per_family
    return 2, 1
