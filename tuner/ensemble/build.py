"""`tuner ensemble build` of holdout studies: candidates -> out-of-fold refits -> blends -> final fits -> one test look.

(K-fold studies keep every trial's out-of-fold predictions and fold models: `tuner.ensemble.bagged_trials`
builds from those without fitting anything.)

Every choice (which near-duplicates go, the blend weights, the meta-models, the blend to export)
is made on out-of-fold predictions of the train + validation rows. Only at the end is the sealed
test split read, once, to score every member and every blend; that look is counted on each
source study, as `study finalize` counts its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tuner.data import TRAIN, VALID
from tuner.data.preprocess import encode_target, fit_target_encoder, prepare_parts
from tuner.ensemble.blends import (
    best_tree, fit_wide_deep, plan_deep_part, stacked_out_of_fold,
)
from tuner.ensemble.candidates import gather_candidates, open_sources
from tuner.ensemble.fitted import FittedEnsemble, FittedMember
from tuner.ensemble.oof import fit_candidate, fold_ids, member_fitter, out_of_fold
from tuner.ensemble.selection import cross_fitted, drop_near_duplicates, greedy_selection, optimised_weights
from tuner.study.trial_bags import has_oof
from tuner.ensemble.bagged_trials import blend_bagged_trials
from tuner.ensemble.judge import BLENDS, Blended, choose_blend, judge, standard_blends
from tuner.core.errors import TunerError
from tuner.core.metrics import METRICS, Metric

EXAMPLE_ROWS = 5


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build. `test_looks` names the studies whose look was already counted (and the
    count now), empty if the test split was not reached; either way nothing was stored."""

    def __init__(self, test_looks: dict[str, int]) -> None:
        super().__init__()
        self.test_looks = test_looks


def build_ensemble(name: str, studies: list[str], storage_url: str | None = None, tracking_uri: str | None = None,
                   per_family: int = 2, folds: int = 5, correlation: float = 0.98, root: str | Path | None = None,
                   on_step: Callable[[str], None] = lambda message: None, families: Iterable[str] | None = None,
                   wide_deep: bool = True, refit: bool = False, rebuild_s: float | None = None) -> dict[str, Any]:
    """Build, score once on test, log to MLflow and store the blends; returns the build record.

    `families` limits the members to those families and `wide_deep=False` skips the jointly trained
    blend: what `tuner run-all` does when its time budget cannot pay for them. `refit=True` (a
    K-fold study only) refits each picked member on every search row instead of averaging its bag.
    `rebuild_s` (a K-fold study) bounds the seconds spent rebuilding trials whose fold models were
    let go: those past it are left out of the selection (None: no bound).
    Ctrl-C raises `BuildInterrupted`, which says whether the test look was counted.
    """
    looks: dict[str, int] = {}
    try:
        return _build(name, studies, storage_url, tracking_uri, per_family, folds, correlation, root, on_step, looks,
                      None if families is None else set(families), wide_deep, refit, rebuild_s)
    except KeyboardInterrupt:
        raise BuildInterrupted(dict(looks)) from None


def _build(name: str, studies: list[str], storage_url: str | None, tracking_uri: str | None, per_family: int,
           folds: int, correlation: float, root: str | Path | None, on_step: Callable[[str], None],
           looks: dict[str, int], families: set[str] | None, with_wide_deep: bool, refit: bool = False,
           rebuild_s: float | None = None) -> dict[str, Any]:
    """`build_ensemble`'s work; `looks` fills in as each study's test look is counted."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TunerError(f"ensemble name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if not 0.0 < correlation <= 1.0:
        raise TunerError(f"--correlation must be in (0, 1], got {correlation}")
    from tuner.tracking import Tracker

    sources = open_sources(studies, storage_url)
    tracker = Tracker(tracking_uri)
    if len(sources) == 1 and any(map(has_oof, sources[0].study.get_trials(deepcopy=False))):
        tracker.check()
        blended, encoder, preprocessor = blend_bagged_trials(sources[0], on_step, refit, families, rebuild_s)
        return judge(name, sources, blended, METRICS[sources[0].metric], encoder, preprocessor, tracker, looks, root,
                     on_step)
    candidates = gather_candidates(sources, per_family, families)
    tracker.check()
    first = sources[0]
    dataset, task, split, metric = first.dataset, first.task, first.split, METRICS[first.metric]
    rows = np.sort(np.concatenate([split.rows(TRAIN), split.rows(VALID)]))
    y = encode_target(fit_target_encoder(dataset.y[rows], task), dataset.y[rows])
    ids = fold_ids(y, task, folds, split.seed)

    on_step(f"out-of-fold predictions of {len(candidates)} candidates ({folds} folds)")
    oof = out_of_fold(dataset, task, rows, ids, {c.label: member_fitter(c) for c in candidates})
    labels = [c.label for c in candidates]
    member_oof = {label: metric.score(y, oof[label]) for label in labels}
    kept, dropped = drop_near_duplicates(labels, [oof[l] for l in labels], [member_oof[l] for l in labels],
                                         metric, correlation)
    chosen = [candidates[i] for i in kept]  # best out-of-fold score first
    predictions = [oof[c.label] for c in chosen]

    tree, plan = best_tree(chosen), plan_deep_part(chosen)
    blends = BLENDS if with_wide_deep else tuple(b for b in BLENDS if b != "wide_deep")
    weighting, weights, blend_oof = _weighted(predictions, y, ids, metric, task)
    blend_oof.update({
        "best_single": predictions[0],
        "average": np.mean(predictions, axis=0),
        "stacked": stacked_out_of_fold(predictions, y, task, ids),
    })
    if with_wide_deep:
        on_step(f"wide-and-deep blend out of fold (deep part {plan.origin}; wide part "
                f"{'+ leaves of ' + tree.label if tree else 'raw features only'})")
        blend_oof.update(out_of_fold(
            dataset, task, rows, ids, {"wide_deep": lambda part, encoder: fit_wide_deep(tree, plan, part, encoder)}))

    full, _, preprocessor, encoder = prepare_parts(dataset, task, rows, {})
    blend_scores = {blend: metric.score(y, blend_oof[blend]) for blend in blends}
    on_step(f"refitting {len(chosen)} members and the learned blends on all {len(rows)} train + validation rows")
    fitted = [fit_candidate(c, full, encoder) for c in chosen]
    wide_deep = fit_wide_deep(tree, plan, full, encoder) if with_wide_deep else None
    classes = None if encoder is None else list(encoder.classes_)
    example = full.raw[:EXAMPLE_ROWS]

    def ensemble(blend: str, members: list[FittedMember], combiner) -> FittedEnsemble:
        return FittedEnsemble(blend, task, metric.name, classes, preprocessor, members, combiner, dataset.fingerprint,
                              split.digest, example=example)

    ensembles = standard_blends(ensemble, fitted, weights, predictions, y, task)
    if wide_deep is not None:
        ensembles["wide_deep"] = ensemble("wide_deep", wide_deep.members, wide_deep.combiner)
    rows_of = [{"label": c.label, "study": c.study, "trial": c.trial.number, "family": c.family, "params": c.params,
                "steps": c.steps, "val": c.trial.value, "oof": member_oof[c.label]} for c in chosen]
    blended = Blended(fitted, rows_of, weights, predictions, ensembles, blend_scores, choose_blend(blend_scores, metric),
                      weighting, {
                          "folds": folds, "per_family": per_family, "correlation_threshold": correlation,
                          "dropped": [{"dropped": d.dropped, "kept": d.kept, "correlation": d.correlation,
                                       "oof": member_oof[d.dropped]} for d in dropped],
                          "wide_deep": ({"deep_part": wide_deep.combiner.deep_part, "tree": tree.label if tree else None}
                                        if wide_deep is not None else None),  # None: skipped, as the time budget asked
                      })
    return judge(name, sources, blended, metric, encoder, preprocessor, tracker, looks, root, on_step)


def _weighted(predictions: list[np.ndarray], y: np.ndarray, ids: np.ndarray, metric: Metric,
              task: str) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Greedy selection or optimised weights, whichever scores better out of fold (cross-fitted)."""
    rules = {
        "greedy selection (Caruana)": lambda p, t: greedy_selection(p, t, metric),
        "optimised weights (SLSQP)": lambda p, t: optimised_weights(p, t, task != "regression"),
    }
    scored = {name: cross_fitted(rule, predictions, y, ids) for name, rule in rules.items()}
    best = None
    for name, blended in scored.items():
        if best is None or metric.better(metric.score(y, blended), metric.score(y, scored[best])):
            best = name
    return best, rules[best](predictions, y), {"weighted": scored[best]}
