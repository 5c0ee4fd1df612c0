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
from tuner.study import ATTR, RunResult, load_existing, run_study

SEARCH_SHARE = 0.4
FINALIZE_TOP = 3


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
        folds, per_family = ensemble_size(name, storage_url, left())
        on_step(f"ensemble: {per_family} member(s) per family, {folds}-fold out-of-fold predictions")
        build = build_ensemble(name, [name], storage_url, tracking_uri, per_family=per_family, folds=folds,
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


def ensemble_size(name: str, storage_url: str | None, seconds_left: float | None) -> tuple[int, int]:
    """Folds and members per family the ensemble stage can afford, from the trials' own durations.

    Each member costs about (folds + 1) fits of its family's median trial time (K out-of-fold fits
    and the final refit); the wide-and-deep blend costs as much as the slowest Keras family. Without
    a time budget the defaults (5 folds, 2 per family) are used.
    """
    if seconds_left is None:
        return 5, 2
    study = load_existing(name, storage_url)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    per_family_s: dict[str, list[float]] = {}
    for t in complete:
        per_family_s.setdefault(t.user_attrs.get("family", "?"), []).append(t.user_attrs.get("duration_s", 1.0))
    medians = {family: statistics.median(durations) for family, durations in per_family_s.items()} or {"?": 1.0}
    keras = [s for family, s in medians.items() if family in FAMILIES and FAMILIES[family].uses_keras]
    for folds, per_family in ((5, 2), (3, 2), (3, 1), (2, 1)):
        cost = (folds + 1) * (per_family * sum(medians.values()) + max(keras, default=0.0))
        if cost <= seconds_left:
            return folds, per_family
    return 2, 1
