"""The end of every ensemble build: one look at the sealed test split, the build record, MLflow, the store.

Everything before this (which members, which weights, which blend to export) was decided out of
fold. Here the test look is counted on each source study before any test row is read, every member
and blend is scored once with bootstrap standard errors, and the build is logged to MLflow and
written under `ensembles/.built/NAME/` in one swap. `run-all` counts one look for this and its
finalists together and calls `record_build` (`tuner.pipeline.test_look`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.preprocessing import LabelEncoder

from tuner.data import TEST, Part
from tuner.data.preprocess import FeaturePreprocessor, encode_target, take_rows
from tuner.ensemble.blends import fit_stacked
from tuner.ensemble.fitted import RAW_VIEW, FittedEnsemble, FittedMember, WeightedAverage
from tuner.ensemble.selection import correlation_matrix
from tuner.ensemble.store import write_build
from tuner.evaluate.finalize import BOOTSTRAP_SAMPLES, bootstrap_interval
from tuner.core.metrics import Metric, renormalise
from tuner.study.sealed import ATTR, SealedStudy
from tuner.study.catalog import count_test_look

BLENDS = ("best_single", "average", "weighted", "stacked", "wide_deep")  # ties go to the simpler, earlier one
RUN_PLOTS = {"weights": "plots/member_weights.png", "correlation": "plots/prediction_correlation.png"}
log = logging.getLogger("tuner")


@dataclass
class Blended:
    """What a build decided out of fold, before its one test look.

    `members` are every member a blend uses, best out-of-fold score first; `rows[i]` describes
    member i (label, study, trial, family, params, steps, val, oof); `weights[i]` is its weight in
    the weighted blend; `record` holds the fields only one kind of build has (folds, dropped
    near-duplicates, the wide-and-deep plan, candidate counts).
    """

    members: list[FittedMember]
    rows: list[dict[str, Any]]
    weights: np.ndarray
    predictions: list[np.ndarray]
    ensembles: dict[str, FittedEnsemble]
    oof_scores: dict[str, float]
    chosen: str
    weighting: str
    record: dict[str, Any] = field(default_factory=dict)


def standard_blends(make: Callable[[str, list[FittedMember], Any], FittedEnsemble], members: list[FittedMember],
                    weights: np.ndarray, predictions: list[np.ndarray], y: np.ndarray,
                    task: str) -> dict[str, FittedEnsemble]:
    """The best single member, the plain average, the weighted blend (`weights`, one per member) and
    the stacked blend on the members' out-of-fold `predictions`; `make(blend, members, combiner)`
    wraps each as the build's FittedEnsemble."""
    used = weights > 0
    return {
        "best_single": make("best_single", members[:1], WeightedAverage(np.ones(1))),
        "average": make("average", members, WeightedAverage(np.full(len(members), 1.0 / len(members)))),
        "weighted": make("weighted", [m for m, u in zip(members, used) if u],
                         WeightedAverage(weights[used] / weights[used].sum())),
        "stacked": make("stacked", members, fit_stacked(predictions, y, task)),
    }


def choose_blend(oof_scores: dict[str, float], metric: Metric) -> str:
    """The blend with the best out-of-fold score; a tie goes to the simpler, earlier one in `BLENDS`."""
    chosen = None
    for blend in BLENDS:
        if blend in oof_scores and (chosen is None or metric.better(oof_scores[blend], oof_scores[chosen])):
            chosen = blend
    return chosen


@dataclass
class ChosenBuild:
    """A build decided out of fold, nothing scored on test yet: what its one look needs besides the count.
    `tuner run-all` holds one between its ensemble stage and its test look."""

    name: str
    sources: list[SealedStudy]
    blended: Blended
    metric: Metric
    encoder: LabelEncoder | None
    preprocessor: FeaturePreprocessor
    tracker: Any


def judge(build: ChosenBuild, looks: dict[str, int], root: str | Path | None,
          on_step: Callable[[str], None]) -> dict[str, Any]:
    """Count the look on each source study, score once on test, log to MLflow, store the blends;
    returns the build record."""
    on_step("scoring every member and blend once on the sealed test split")
    for source in build.sources:  # counted before any test row is read; `looks` tells a Ctrl-C what was counted
        looks[source.config.name] = count_test_look(source.study, f"ensemble build {build.name}")
    return record_build(build, looks, root)


def record_build(build: ChosenBuild, looks: dict[str, int], root: str | Path | None) -> dict[str, Any]:
    """Score every member and blend on the test rows of a look already counted (`looks`: each source
    study's count), log to MLflow, store the blends; returns the build record."""
    name, sources, blended, metric = build.name, build.sources, build.blended, build.metric
    encoder, preprocessor, tracker = build.encoder, build.preprocessor, build.tracker
    first = sources[0]
    dataset, split = first.dataset, first.split
    test_rows = split.rows(TEST)
    test = Part("test", test_rows, take_rows(dataset, test_rows), encode_target(encoder, dataset.y[test_rows]),
                preprocessor)
    predicted = {id(f.member): f.member.predict_scores(test.raw if f.view == RAW_VIEW else test.X(f.view))
                 for f in blended.members}
    member_test = [_scored(metric, test.y, predicted[id(f.member)]) for f in blended.members]
    test_scores = {blend: renormalise(_predict_test(ens, test, predicted)) for blend, ens in blended.ensembles.items()}
    blend_test = {blend: _scored(metric, test.y, scores) for blend, scores in test_scores.items()}
    difference_se = {blend: _paired_difference_se(metric, test.y, scores, test_scores["best_single"])
                     for blend, scores in test_scores.items()}
    for blend, ens in blended.ensembles.items():
        ens.scores = {f"oof_{metric.name}": blended.oof_scores[blend], f"test_{metric.name}": blend_test[blend][0]}

    ensembles = blended.ensembles
    record: dict[str, Any] = {
        "name": name, "studies": [s.config.name for s in sources], "task": first.task, "metric": metric.name,
        "direction": metric.direction, "chosen": blended.chosen, "best_single": "best_single",
        "best_single_member": blended.rows[0]["label"], "weighting": blended.weighting,
        "rows": {"oof": int(len(blended.predictions[0])), "test": int(len(test_rows))},
        "folds": None, "per_family": None, "correlation_threshold": None, "dropped": [], "wide_deep": None,
        **blended.record,
        "blends": {
            blend: {"oof": blended.oof_scores[blend], "test": blend_test[blend][0], "test_se": blend_test[blend][1],
                    "test_difference_se": difference_se[blend],
                    "folder": blend, "members": [m.label for m in ensembles[blend].members],
                    "weights": (ensembles[blend].combiner.weights.tolist()
                                if isinstance(ensembles[blend].combiner, WeightedAverage) else None)}
            for blend in ensembles
        },
        "members": [{**row, "view": f.view, "test": t[0], "test_se": t[1], "weight": float(w)}
                    for row, f, t, w in zip(blended.rows, blended.members, member_test, blended.weights)],
        "correlation": {"members": [row["label"] for row in blended.rows],
                        "matrix": correlation_matrix(blended.predictions).round(4).tolist()},
        "fingerprint": split.fingerprint, "split_digest": split.digest, "test_looks": looks,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    from tuner.reporting.ensemble_page import render_markdown, verdict
    from tuner.reporting.plots import ensemble_plots

    record["verdict"] = verdict(record)
    images = ensemble_plots(record)
    files: dict[str, str | bytes] = {RUN_PLOTS[kind]: png for kind, png in images.items()}
    record["tracking_run_id"] = None
    run_id = tracker.log_ensemble(name, record, render_markdown(record), files)
    record["tracking_run_id"] = run_id
    try:
        path = write_build(name, record, lambda folder: _save_blends(ensembles, folder), root)
    except BaseException:
        tracker.delete_run(run_id)
        raise
    record["path"] = str(path)
    _show_on_studies(tracker, sources, name, images)
    return record


def _predict_test(ensemble: FittedEnsemble, test: Part, predicted: dict[int, np.ndarray]) -> np.ndarray:
    """The blend's test scores from its members' scores already computed (a member is predicted once,
    however many blends hold it); the views only when the combiner reads features itself."""
    scores = [predicted.get(id(m.member)) for m in ensemble.members]
    if any(s is None for s in scores):  # a blend's own members (the wide-and-deep blend)
        return ensemble.predict_scores(test.raw)
    views = ensemble.transform(test.raw) if ensemble.combiner.views() else {}
    return ensemble.combiner.combine(scores, ensemble.members, views)


def _show_on_studies(tracker, sources, name: str, images: dict[str, bytes]) -> None:
    """The ensemble's plots also on each source study's run (`plots/ensemble-NAME-weights.png`, ...), so
    that run shows every plot of the study. Best effort: the build is already stored and logged."""
    from tuner.reporting.plots import ENSEMBLE_PLOT_PREFIX

    prefix = f"{ENSEMBLE_PLOT_PREFIX}{name}-"
    for source in sources:
        try:
            _, run_id = tracker.existing_study_run(source.config.name, source.study.user_attrs[ATTR + "uid"])
            tracker.replace_plots(run_id, {f"{prefix}{kind}.png": png for kind, png in images.items()},
                                  owns=lambda path: path.startswith(prefix))
        except Exception as exc:  # a study tracked in another store only misses the copy
            log.warning("ensemble %s: its plots were not added to study %s's MLflow run (%s)", name,
                        source.config.name, (str(exc).splitlines() or [type(exc).__name__])[0][:200])


def _save_blends(ensembles: dict[str, FittedEnsemble], folder: Path) -> None:
    """Each blend in its own folder."""
    saved: dict[int, Path] = {}  # a member several blends share is written once, then hard-linked
    for blend, ensemble in ensembles.items():
        ensemble.save(folder / blend, saved)


def _scored(metric: Metric, y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Test score and its bootstrap standard error."""
    scores = renormalise(scores)
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
