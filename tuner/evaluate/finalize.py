"""Scoring the sealed test split for `study finalize` (and for `run-all`'s test look, beside its ensemble).

The top configurations (by validation score, at least the best of each family) are refitted on
train + validation (every search row of a K-fold study) with the epoch / round count early
stopping found (the median over folds), and each is scored on the test rows. A holdout part, if
the study has one, is left out of the refit and never read here. The report says how far validation flattered the winner and whether that is more than
the test size can explain (BOOK.md, "Hyperparameter optimisation").
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

from tuner.study.trial_attrs import BEST_STEP_ATTR, FAMILY_ATTR, PARAMS_ATTR
from tuner.study.trial_bags import TrialBags, artifact_root, assemble_bags, has_oof
from tuner.data import TEST, prepare_parts
from tuner.core.errors import TunerError
from tuner.core.metrics import METRICS, Metric, direction_sign
from tuner.models import FAMILIES, ProblemSpec
from tuner.study.sealed import ATTR, SealedStudy, open_sealed
from tuner.study.catalog import count_test_look
from tuner.reporting.finalize_page import render_markdown

BOOTSTRAP_SAMPLES = 1000


class AlreadyFinalized(TunerError):
    """The test split was already looked at; looking again needs --force and is counted."""


@dataclass
class FinalRow:
    trial: int
    family: str
    params: dict[str, Any]
    steps: int | None
    val: float  # the search score: val_<metric>, or cv_<metric> in a K-fold study
    test: float
    test_low: float
    test_high: float
    optimism: float  # how much better validation said it was than test, in the metric's units
    val_rank: int = 0
    test_rank: int = 0


@dataclass
class FinalizeReport:
    study: str
    metric: str
    direction: str
    rows_train: int
    rows_val: int
    rows_test: int
    trials_complete: int
    test_looks: int
    rows: list[FinalRow]
    spearman: float | None
    val_standard_error: float
    expected_selection_optimism: float
    warnings: list[str] = field(default_factory=list)
    finished_at: str = ""
    score_name: str = ""  # the search score's name: val_<metric> or cv_<metric>
    rows_scored: int = 0  # rows behind one search score: the validation part, or every search row with folds

    @property
    def winner(self) -> FinalRow:
        return self.rows[0]

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FinalizeReport:
        """The report stored with the study (attr `tuner.evaluate.finalize`), shown again without a new test look."""
        return cls(**{**record, "rows": [FinalRow(**row) for row in record["rows"]]})


def select_finalists(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The best `top` complete trials by validation, widened to hold the best of every family."""
    sign = direction_sign(study.direction)
    ranked = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                    key=lambda t: -sign * t.value)
    chosen = ranked[:top]
    for family in sorted({t.user_attrs[FAMILY_ATTR] for t in ranked}):
        if not any(t.user_attrs[FAMILY_ATTR] == family for t in chosen):
            chosen.append(next(t for t in ranked if t.user_attrs[FAMILY_ATTR] == family))
    return sorted(chosen, key=lambda t: -sign * t.value)


def bootstrap_interval(metric: Metric, y: np.ndarray, scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """95% percentile interval and standard error of the metric over bootstrap resamples of rows.

    NaN all three when fewer than two resamples can be scored (roc_auc on a test part so small that
    resamples hold one class): no interval is better than a made-up one.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(y), len(y))
        if metric.name == "roc_auc" and len(np.unique(y[rows])) < 2:
            continue
        values.append(metric.score(y[rows], scores[rows]))
    if len(values) < 2:
        return math.nan, math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), float(np.std(values, ddof=1))


def finalize_study(name: str, storage_url: str | None = None, tracking_uri: str | None = None, top: int = 5,
                   force: bool = False, study_file: str | None = None) -> FinalizeReport:
    sealed = open_sealed(name, storage_url, study_file)
    study = sealed.study
    earlier = int(study.user_attrs.get(ATTR + "test_looks", 0))
    if earlier and not force:
        raise AlreadyFinalized(
            f"study {name!r} was already scored on its test split ({earlier} look(s)); every further look "
            "is counted and weakens the estimate: add --force to look again"
        )
    finalists = finalists_of(sealed, top)
    from tuner.tracking import Tracker

    tracker = Tracker(tracking_uri)
    tracker.check()
    counted: list[int] = []  # this run's look number, once it is counted
    try:
        rows = score_on_test(sealed, finalists, before_scoring=lambda: counted.append(count_test_look(study, "finalize")))
        report = record_finalize(sealed, rows, counted[0], tracker)
    except Exception as exc:
        if not counted:  # failed before any test row was scored: nothing was spent
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TunerError(f"finalize failed after test look {counted[0]} of study {name!r} was counted ({reason}); "
                         "the look stays counted: fix the cause and rerun with --force") from exc
    return report


def finalists_of(sealed: SealedStudy, top: int) -> list[FrozenTrial]:
    """`select_finalists`, refused with one line when the study cannot be finalized."""
    name = sealed.config.name
    if sealed.metric not in METRICS:
        raise TunerError(f"study {name!r} is scored by the custom monitor {sealed.metric!r}, which has no test-set "
                         "counterpart; finalize needs a study `metric:`")
    finalists = select_finalists(sealed.study, top)
    if not finalists:
        raise TunerError(f"study {name!r} has no complete trial to finalize; run `tuner study run` first")
    return finalists


def record_finalize(sealed: SealedStudy, rows: list[FinalRow], look: int, tracker: Any) -> FinalizeReport:
    """The report on `rows` (scored in test look number `look`), stored with the study and logged to MLflow."""
    report = _report_finalists(sealed, rows, look)
    sealed.study.set_user_attr(ATTR + "finalize", report.to_record())
    tracker.log_finalize(sealed.config.name, sealed.study.user_attrs[ATTR + "uid"], report, render_markdown(report))
    return report


def refit_predictions(sealed: SealedStudy, trials: list[FrozenTrial], fit_rows: np.ndarray, scored_rows: np.ndarray,
                      part: str) -> Iterator[tuple[FrozenTrial, np.ndarray, np.ndarray]]:
    """Each trial's configuration refitted on `fit_rows` with the step count early stopping found (a
    bagged trial of a K-fold study: its stored fold models, averaged, instead); yields (trial,
    encoded targets of `scored_rows` (the `part`: test or holdout), its predictions for them)."""
    if sealed.metric not in METRICS:
        raise TunerError(f"study {sealed.config.name!r} is scored by the custom monitor {sealed.metric!r}, which has "
                         "no counterpart outside the search; this needs a study `metric:`")
    fit, parts, _, encoder = prepare_parts(sealed.dataset, sealed.task, fit_rows, {part: scored_rows})
    scored = parts[part]
    if trials and all(map(has_oof, trials)):  # bagged trials: their own fold models, nothing refitted
        bags, _ = assemble_bags(sealed, trials, TrialBags(artifact_root(sealed.storage_url)))
        for trial, bag in zip(trials, bags):
            yield trial, scored.y, bag.predict_scores(scored.raw)
        return
    for trial in trials:
        family = FAMILIES[trial.user_attrs[FAMILY_ATTR]]
        steps = trial.user_attrs.get(BEST_STEP_ATTR)
        spec = sealed.problem_spec(**ProblemSpec.data_fields(fit, encoder))
        if steps is not None:
            spec = replace(spec, max_epochs=steps, max_rounds=steps)
        view = family.view_for(spec)
        member = family.fit_member(trial.user_attrs[PARAMS_ATTR], spec, trial.number, fit.X(view), fit.y)
        predictions = member.predict_scores(scored.X(view))
        family.release_memory()
        yield trial, scored.y, predictions


def score_on_test(sealed: SealedStudy, trials: list[FrozenTrial],
                  before_scoring: Callable[[], None] = lambda: None) -> list[FinalRow]:
    """Refit each trial's configuration on every search row, then score them all on the test rows.

    Every refit runs first, so a failing one costs no test look; `before_scoring` runs once, just
    before the first test label is compared with a prediction: `finalize_study` counts its look
    there. The honesty benchmark passes nothing, to score a random configuration beside the
    finalists without a second look.
    """
    refitted = predict_test(sealed, trials)
    before_scoring()
    return score_predictions(sealed, refitted)


def predict_test(sealed: SealedStudy, trials: list[FrozenTrial]) -> list[tuple[FrozenTrial, np.ndarray, np.ndarray]]:
    """Each trial refitted on every search row (a bagged trial: its fold models) and its test
    predictions, with the encoded test targets; nothing is scored yet, so nothing is looked at."""
    return list(refit_predictions(sealed, trials, sealed.split.search_rows(), sealed.split.rows(TEST), "test"))


def score_predictions(sealed: SealedStudy,
                      refitted: list[tuple[FrozenTrial, np.ndarray, np.ndarray]]) -> list[FinalRow]:
    """`predict_test`'s predictions scored on the test targets, each with its bootstrap interval and
    optimism: the look itself."""
    metric = METRICS[sealed.metric]
    rows = []
    for trial, y, predictions in refitted:
        value = metric.score(y, predictions)
        low, high, _ = bootstrap_interval(metric, y, predictions, seed=trial.number)
        optimism = trial.value - value if metric.sign > 0 else value - trial.value
        rows.append(FinalRow(trial.number, trial.user_attrs[FAMILY_ATTR], trial.user_attrs[PARAMS_ATTR],
                             trial.user_attrs.get(BEST_STEP_ATTR), trial.value, value, low, high, optimism))
    return rows


def search_score_standard_error(metric: Metric, winner: FinalRow, rows_scored: int, rows_test: int) -> float:
    """Standard error of one search score on `rows_scored` rows.

    Accuracy is a proportion: binomial, at the winner's test accuracy (an honest estimate, kept half
    a row from 0 and 1). Other metrics have no formula: the winner's bootstrap test SE, scaled by
    sqrt(rows_test / rows_scored) because a standard error shrinks with the square root of the rows.
    """
    n = max(rows_scored, 1)
    if metric.name == "accuracy":
        p = min(max(winner.test, 0.5 / n), 1 - 0.5 / n)
        return math.sqrt(p * (1 - p) / n)
    test_se = (winner.test_high - winner.test_low) / (2 * 1.96)
    return test_se * math.sqrt(rows_test / n)


def top_spread(values: list[float], direction: str, top: int = 5) -> float:
    """How far the best search score lies from the `top`-th best (0 with fewer than two scores)."""
    ranked = sorted(values, reverse=direction_sign(direction) > 0)[:top]
    return abs(ranked[0] - ranked[-1]) if len(ranked) > 1 else 0.0


def _report_finalists(sealed: SealedStudy, rows: list[FinalRow], looks: int) -> FinalizeReport:
    """Ranks, rank correlation, and the warnings a careful statistician would give."""
    metric = METRICS[sealed.metric]
    sign = metric.sign
    for rank, row in enumerate(sorted(rows, key=lambda r: -sign * r.val), start=1):
        row.val_rank = rank
    for rank, row in enumerate(sorted(rows, key=lambda r: -sign * r.test), start=1):
        row.test_rank = rank
    counts = sealed.split.counts()
    scored = len(sealed.split.search_rows()) if sealed.split.folds is not None else counts["val"]
    score_name = sealed.score_name
    values = [t.value for t in sealed.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    complete = len(values)
    winner = rows[0]
    val_se = search_score_standard_error(metric, winner, scored, counts["test"])
    inflation = val_se * math.sqrt(2 * math.log(complete)) if complete > 1 else 0.0
    rho = None
    if len(rows) >= 3 and len({r.val for r in rows}) > 1 and len({r.test for r in rows}) > 1:
        rho = float(spearmanr([r.val for r in rows], [r.test for r in rows]).statistic)
    report = FinalizeReport(
        study=sealed.config.name, metric=sealed.metric, direction=metric.direction, rows_train=counts["train"],
        rows_val=counts["val"], rows_test=counts["test"], trials_complete=complete, test_looks=looks, rows=rows,
        spearman=rho, val_standard_error=val_se, expected_selection_optimism=inflation,
        finished_at=time.strftime("%Y-%m-%d %H:%M:%S"), score_name=score_name, rows_scored=scored,
    )
    if any(math.isnan(r.test_low) for r in rows):
        report.warnings.append(
            f"the {counts['test']} test rows are too few or too one-sided to bootstrap a test_{sealed.metric} "
            "interval (a resample needs both classes): intervals are n/a, so read the test scores as rough estimates"
        )
    half_width = (winner.test_high - winner.test_low) / 2
    if winner.optimism > half_width:  # False when the interval is n/a (NaN)
        report.warnings.append(
            f"{score_name} flattered the winner by {winner.optimism:.4f} {sealed.metric}, more than the test "
            f"score's 95% interval (+/-{half_width:.4f} on {counts['test']} test rows) explains"
        )
    spread = top_spread(values, metric.direction)
    if complete > 1 and inflation >= spread:
        remedy = "more data or more repeats" if sealed.split.folds is not None else "prefer K-fold validation (split.folds) or more data"
        report.warnings.append(
            f"picking the best of {complete} trials on {scored} scored rows flatters the winner by about "
            f"{inflation:.4f} {sealed.metric} by luck alone (standard error {val_se:.4f} x sqrt(2 ln {complete})), "
            f"as much as or more than the top {min(complete, 5)} {score_name} scores differ ({spread:.4f}): "
            f"which of them won is mostly noise; {remedy}"
        )
    if looks > 1:
        report.warnings.append(f"this is test look number {looks}: the test score is no longer an untouched estimate")
    return report
