"""`tuner ensemble build`: candidates -> out-of-fold predictions -> blends -> final fits -> one test look.

Every choice (which near-duplicates go, the blend weights, the meta-models, the blend to export)
is made on out-of-fold predictions of the train + validation rows. Only at the end is the sealed
test split read, once, to score every member and every blend; that look is counted on each
source study, as `study finalize` counts its own.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tuner.data import TEST, TRAIN, VALID, Part
from tuner.data.preprocess import encode_target, fit_target_encoder, prepare_parts, take_rows
from tuner.ensemble.blends import (
    best_tree, fit_stacked, fit_wide_deep, plan_deep_part, stacked_out_of_fold,
)
from tuner.ensemble.candidates import gather_candidates, open_sources
from tuner.ensemble.fitted import FittedEnsemble, FittedMember, WeightedAverage
from tuner.ensemble.oof import fit_candidate, fold_ids, member_fitter, out_of_fold
from tuner.ensemble.selection import (
    correlation_matrix, cross_fitted, drop_near_duplicates, greedy_selection, optimised_weights,
)
from tuner.ensemble.store import write_build
from tuner.errors import TunerError
from tuner.finalize import BOOTSTRAP_SAMPLES, bootstrap_interval
from tuner.metrics import METRICS, Metric
from tuner.sealed import ATTR
from tuner.studies import count_test_look

RUN_PLOTS = {"weights": "plots/member_weights.png", "correlation": "plots/prediction_correlation.png"}
log = logging.getLogger("tuner")
BLENDS = ("best_single", "average", "weighted", "stacked", "wide_deep")  # ties go to the simpler, earlier one
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
                   wide_deep: bool = True) -> dict[str, Any]:
    """Build, score once on test, log to MLflow and store the blends; returns the build record.

    `families` limits the members to those families and `wide_deep=False` skips the jointly trained
    blend: what `tuner run-all` does when its time budget cannot pay for them.
    Ctrl-C raises `BuildInterrupted`, which says whether the test look was counted.
    """
    looks: dict[str, int] = {}
    try:
        return _build(name, studies, storage_url, tracking_uri, per_family, folds, correlation, root, on_step, looks,
                      None if families is None else set(families), wide_deep)
    except KeyboardInterrupt:
        raise BuildInterrupted(dict(looks)) from None


def _build(name: str, studies: list[str], storage_url: str | None, tracking_uri: str | None, per_family: int,
           folds: int, correlation: float, root: str | Path | None, on_step: Callable[[str], None],
           looks: dict[str, int], families: set[str] | None, with_wide_deep: bool) -> dict[str, Any]:
    """`build_ensemble`'s work; `looks` fills in as each study's test look is counted."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TunerError(f"ensemble name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if not 0.0 < correlation <= 1.0:
        raise TunerError(f"--correlation must be in (0, 1], got {correlation}")
    from tuner.tracking import Tracker

    sources = open_sources(studies, storage_url)
    candidates = gather_candidates(sources, per_family, families)
    tracker = Tracker(tracking_uri)
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
    chosen_blend = blends[0]
    for blend in blends[1:]:
        if metric.better(blend_scores[blend], blend_scores[chosen_blend]):
            chosen_blend = blend

    on_step(f"refitting {len(chosen)} members and the learned blends on all {len(rows)} train + validation rows")
    fitted = [fit_candidate(c, full, encoder) for c in chosen]
    wide_deep = fit_wide_deep(tree, plan, full, encoder) if with_wide_deep else None
    classes = None if encoder is None else list(encoder.classes_)
    example = full.raw[:EXAMPLE_ROWS]

    def ensemble(blend: str, members: list[FittedMember], combiner) -> FittedEnsemble:
        return FittedEnsemble(blend, task, metric.name, classes, preprocessor, members, combiner, dataset.fingerprint,
                              split.digest, example=example)

    used = weights > 0
    ensembles = {
        "best_single": ensemble("best_single", fitted[:1], WeightedAverage(np.ones(1))),
        "average": ensemble("average", fitted, WeightedAverage(np.full(len(fitted), 1.0 / len(fitted)))),
        "weighted": ensemble("weighted", [m for m, u in zip(fitted, used) if u],
                             WeightedAverage(weights[used] / weights[used].sum())),
        "stacked": ensemble("stacked", fitted, fit_stacked(predictions, y, task)),
    }
    if wide_deep is not None:
        ensembles["wide_deep"] = ensemble("wide_deep", wide_deep.members, wide_deep.combiner)

    on_step("scoring every member and blend once on the sealed test split")
    for source in sources:  # counted before any test row is read; `looks` tells a Ctrl-C what was counted
        looks[source.config.name] = count_test_look(source.study, f"ensemble build {name}")
    test_rows = split.rows(TEST)
    test = Part("test", test_rows, take_rows(dataset, test_rows), encode_target(encoder, dataset.y[test_rows]),
                preprocessor)
    member_test = [_scored(metric, test.y, f.member.predict_scores(test.X(f.view))) for f in fitted]
    test_scores = {blend: _probabilities(ens.predict_scores(test.raw)) for blend, ens in ensembles.items()}
    blend_test = {blend: _scored(metric, test.y, scores) for blend, scores in test_scores.items()}
    difference_se = {blend: _paired_difference_se(metric, test.y, scores, test_scores["best_single"])
                     for blend, scores in test_scores.items()}
    for blend, ens in ensembles.items():
        ens.scores = {f"oof_{metric.name}": blend_scores[blend], f"test_{metric.name}": blend_test[blend][0]}

    matrix = correlation_matrix(predictions)
    record: dict[str, Any] = {
        "name": name, "studies": [s.config.name for s in sources], "task": task, "metric": metric.name,
        "direction": metric.direction, "chosen": chosen_blend, "best_single": "best_single",
        "best_single_member": chosen[0].label, "folds": folds, "per_family": per_family,
        "correlation_threshold": correlation, "rows": {"oof": int(len(rows)), "test": int(len(test_rows))},
        "weighting": weighting,
        "blends": {
            blend: {"oof": blend_scores[blend], "test": blend_test[blend][0], "test_se": blend_test[blend][1],
                    "test_difference_se": difference_se[blend],
                    "folder": blend, "members": [m.label for m in ensembles[blend].members],
                    "weights": (ensembles[blend].combiner.weights.tolist()
                                if isinstance(ensembles[blend].combiner, WeightedAverage) else None)}
            for blend in blends
        },
        "members": [
            {"label": c.label, "study": c.study, "trial": c.trial.number, "family": c.family, "params": c.params,
             "steps": c.steps, "view": f.view, "val": c.trial.value, "oof": member_oof[c.label],
             "test": t[0], "test_se": t[1], "weight": float(w)}
            for c, f, t, w in zip(chosen, fitted, member_test, weights)
        ],
        "dropped": [{"dropped": d.dropped, "kept": d.kept, "correlation": d.correlation,
                     "oof": member_oof[d.dropped]} for d in dropped],
        "correlation": {"members": [c.label for c in chosen], "matrix": matrix.round(4).tolist()},
        "wide_deep": ({"deep_part": wide_deep.combiner.deep_part, "tree": tree.label if tree else None}
                      if wide_deep is not None else None),  # None: skipped, as the time budget asked
        "fingerprint": split.fingerprint, "split_digest": split.digest, "test_looks": looks,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    from tuner.ensemble.report import render_markdown, verdict
    from tuner.plots import ensemble_plots

    record["verdict"] = verdict(record)
    images = ensemble_plots(record)
    files: dict[str, str | bytes] = {RUN_PLOTS[kind]: png for kind, png in images.items()}
    record["tracking_run_id"] = None
    markdown = render_markdown(record)
    run_id = tracker.log_ensemble(name, record, markdown, files)
    record["tracking_run_id"] = run_id
    try:
        path = write_build(name, record, lambda folder: _save_blends(ensembles, folder), root)
    except BaseException:
        tracker.delete_run(run_id)
        raise
    record["path"] = str(path)
    _show_on_studies(tracker, sources, name, images)
    return record


def _show_on_studies(tracker, sources, name: str, images: dict[str, bytes]) -> None:
    """The ensemble's plots also on each source study's run (`plots/ensemble-NAME-weights.png`, ...), so
    that run shows every plot of the study. Best effort: the build is already stored and logged."""
    from tuner.plots import ENSEMBLE_PLOT_PREFIX

    prefix = f"{ENSEMBLE_PLOT_PREFIX}{name}-"
    for source in sources:
        try:
            _, run_id = tracker.existing_study_run(source.config.name, source.study.user_attrs[ATTR + "uid"])
            tracker.replace_plots(run_id, {f"{prefix}{kind}.png": png for kind, png in images.items()},
                                  owns=lambda path: path.startswith(prefix))
        except Exception as exc:  # a study tracked in another store only misses the copy
            log.warning("ensemble %s: its plots were not added to study %s's MLflow run (%s)", name,
                        source.config.name, (str(exc).splitlines() or [type(exc).__name__])[0][:200])


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


def _save_blends(ensembles: dict[str, FittedEnsemble], folder: Path) -> None:
    """Each blend in its own folder; MLflow's warning per scikit-learn member about pickles is said once in docs."""
    sklearn_log = logging.getLogger("mlflow.sklearn")
    level = sklearn_log.level
    sklearn_log.setLevel(logging.ERROR)
    try:
        for blend, ensemble in ensembles.items():
            ensemble.save(folder / blend)
    finally:
        sklearn_log.setLevel(level)


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """float32 probabilities (XGBoost) miss one by more than scikit-learn allows: renormalise."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores / scores.sum(axis=1, keepdims=True) if scores.ndim == 2 else scores


def _scored(metric: Metric, y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Test score and its bootstrap standard error."""
    scores = _probabilities(scores)
    _, _, se = bootstrap_interval(metric, y, scores)
    return metric.score(y, scores), se


def _paired_difference_se(metric: Metric, y: np.ndarray, blend: np.ndarray, single: np.ndarray) -> float:
    """Bootstrap standard error of (blend - best single) on the same resampled test rows: much smaller
    than either score's own SE when the two predict alike, so it says whether a difference is noise."""
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(y), len(y))
        if metric.name == "roc_auc" and len(np.unique(y[rows])) < 2:
            continue
        differences.append(metric.score(y[rows], blend[rows]) - metric.score(y[rows], single[rows]))
    return float(np.std(differences, ddof=1))
