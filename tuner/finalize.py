"""Scoring the sealed test split, once: the only code in tuner that reads test rows.

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
from typing import Any, Iterator

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

from tuner.data import TEST, prepare_parts
from tuner.errors import TunerError
from tuner.metrics import METRICS, Metric
from tuner.models import FAMILIES
from tuner.study import ATTR, SealedStudy, open_sealed

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
        """The report stored with the study (attr `tuner.finalize`), shown again without a new test look."""
        return cls(**{**record, "rows": [FinalRow(**row) for row in record["rows"]]})


def select_finalists(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The best `top` complete trials by validation, widened to hold the best of every family."""
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    ranked = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                    key=lambda t: -sign * t.value)
    chosen = ranked[:top]
    for family in sorted({t.user_attrs["family"] for t in ranked}):
        if not any(t.user_attrs["family"] == family for t in chosen):
            chosen.append(next(t for t in ranked if t.user_attrs["family"] == family))
    return sorted(chosen, key=lambda t: -sign * t.value)


def bootstrap_interval(metric: Metric, y: np.ndarray, scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """95% percentile interval and standard error of the metric over bootstrap resamples of rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(y), len(y))
        if metric.name == "roc_auc" and len(np.unique(y[rows])) < 2:
            continue
        values.append(metric.score(y[rows], scores[rows]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), float(np.std(values, ddof=1))


def finalize_study(name: str, storage_url: str | None = None, tracking_uri: str | None = None, top: int = 5,
                   force: bool = False, study_file: str | None = None) -> FinalizeReport:
    sealed = open_sealed(name, storage_url, study_file)
    study = sealed.study
    looks = int(study.user_attrs.get(ATTR + "test_looks", 0))
    if looks and not force:
        raise AlreadyFinalized(
            f"study {name!r} was already scored on its test split ({looks} look(s)); every further look "
            "is counted and weakens the estimate: add --force to look again"
        )
    if sealed.metric not in METRICS:
        raise TunerError(f"study {name!r} is scored by the custom monitor {sealed.metric!r}, which has no test-set "
                         "counterpart; finalize needs a study `metric:`")
    finalists = select_finalists(study, top)
    if not finalists:
        raise TunerError(f"study {name!r} has no complete trial to finalize; run `tuner study run` first")
    from tuner.tracking import Tracker

    tracker = Tracker(tracking_uri)
    tracker.check()
    study.set_user_attr(ATTR + "test_looks", looks + 1)  # counted before any test row is read
    report = _judge(sealed, score_on_test(sealed, finalists), looks + 1)
    study.set_user_attr(ATTR + "finalize", report.to_record())
    tracker.log_finalize(name, study.user_attrs[ATTR + "uid"], report, render_markdown(report))
    return report


def refit_predictions(sealed: SealedStudy, trials: list[FrozenTrial], fit_rows: np.ndarray, scored_rows: np.ndarray,
                      part: str) -> Iterator[tuple[FrozenTrial, np.ndarray, np.ndarray]]:
    """Each trial's configuration refitted on `fit_rows` with the step count early stopping found;
    yields (trial, encoded targets of `scored_rows` (the `part`: test or holdout), its predictions for them)."""
    if sealed.metric not in METRICS:
        raise TunerError(f"study {sealed.config.name!r} is scored by the custom monitor {sealed.metric!r}, which has "
                         "no counterpart outside the search; this needs a study `metric:`")
    fit, parts, preprocessor, encoder = prepare_parts(sealed.dataset, sealed.task, fit_rows, {part: scored_rows})
    scored = parts[part]
    for trial in trials:
        family = FAMILIES[trial.user_attrs["family"]]
        steps = trial.user_attrs.get("best_step")
        spec = sealed.problem_spec(len(encoder.classes_) if encoder is not None else 0, fit.X("tabular").shape[1],
                                   **preprocessor.input_shapes())
        if steps is not None:
            spec = replace(spec, max_epochs=steps, max_rounds=steps)
        if family.uses_keras:
            from tuner.models.keras_training import keras, release_memory

            keras().utils.set_random_seed(spec.seed + trial.number)
        view = family.view_for(spec)
        member = family.build(trial.user_attrs["params"], spec).fit(fit.X(view), fit.y)
        predictions = member.predict_scores(scored.X(view))
        if family.uses_keras:
            release_memory()
        yield trial, scored.y, predictions


def score_on_test(sealed: SealedStudy, trials: list[FrozenTrial]) -> list[FinalRow]:
    """Refit each trial's configuration on every search row and score it on the test rows.

    Reads test rows without counting a look: `finalize_study` counts before calling it, and the
    honesty benchmark uses it to score a random configuration beside the finalists.
    """
    metric = METRICS[sealed.metric]
    rows = []
    for trial, y, predictions in refit_predictions(sealed, trials, sealed.split.search_rows(), sealed.split.rows(TEST), "test"):
        value = metric.score(y, predictions)
        low, high, _ = bootstrap_interval(metric, y, predictions, seed=trial.number)
        optimism = trial.value - value if metric.direction == "maximize" else value - trial.value
        rows.append(FinalRow(trial.number, trial.user_attrs["family"], trial.user_attrs["params"],
                             trial.user_attrs.get("best_step"), trial.value, value, low, high, optimism))
    return rows


def _judge(sealed: SealedStudy, rows: list[FinalRow], looks: int) -> FinalizeReport:
    """Ranks, rank correlation, and the warnings a careful statistician would give."""
    metric = METRICS[sealed.metric]
    sign = 1 if metric.direction == "maximize" else -1
    for rank, row in enumerate(sorted(rows, key=lambda r: -sign * r.val), start=1):
        row.val_rank = rank
    for rank, row in enumerate(sorted(rows, key=lambda r: -sign * r.test), start=1):
        row.test_rank = rank
    counts = sealed.split.counts()
    scored = len(sealed.split.search_rows()) if sealed.split.folds is not None else counts["val"]
    score_name = sealed.score_name
    complete = len(sealed.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    winner = rows[0]
    test_se = (winner.test_high - winner.test_low) / (2 * 1.96)
    val_se = test_se * math.sqrt(counts["test"] / max(scored, 1))
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
    half_width = (winner.test_high - winner.test_low) / 2
    if winner.optimism > half_width:
        report.warnings.append(
            f"{score_name} flattered the winner by {winner.optimism:.4f} {sealed.metric}, more than the test "
            f"score's 95% interval (+/-{half_width:.4f} on {counts['test']} test rows) explains"
        )
    spread = abs(rows[0].val - rows[min(len(rows), 5) - 1].val) if len(rows) > 1 else math.inf
    if spread < val_se:
        remedy = "more data or more repeats" if sealed.split.folds is not None else "prefer K-fold validation (split.folds) or more data"
        report.warnings.append(
            f"the top {score_name} scores lie within one standard error ({val_se:.4f}) of each other on "
            f"{scored} scored rows: choosing among {complete} trials there is mostly noise; {remedy}"
        )
    if looks > 1:
        report.warnings.append(f"this is test look number {looks}: the test score is no longer an untouched estimate")
    return report


def search_score_name(record: FinalizeReport | dict[str, Any]) -> str:
    """The finalize report's search score (records written before K-fold existed say val_)."""
    get = record.get if isinstance(record, dict) else lambda key: getattr(record, key)
    return get("score_name") or f"val_{get('metric')}"


def render_markdown(report: FinalizeReport) -> str:
    m, s = report.metric, search_score_name(report)
    lines = [
        f"# Finalize: {report.study}",
        "",
        f"Refitted on every search row ({report.rows_train + report.rows_val} rows), scored once on the sealed "
        f"test split ({report.rows_test} rows). Test look {report.test_looks}. {report.trials_complete} complete trials.",
        "",
        f"| {s} rank | family | trial | {s} | test_{m} | test_{m} 95% interval | optimism ({s} - test_{m}) | test rank |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report.rows:
        lines.append(f"| {r.val_rank} | {r.family} | {r.trial} | {r.val:.4f} | {r.test:.4f} | "
                     f"[{r.test_low:.4f}, {r.test_high:.4f}] | {r.optimism:+.4f} | {r.test_rank} |")
    rho = "n/a (fewer than 3 finalists)" if report.spearman is None else f"{report.spearman:.2f}"
    lines += [
        "",
        f"- Spearman rank correlation of {s} and test_{m} over the finalists: {rho}",
        f"- Standard error of a {s} on {report.rows_scored or report.rows_val} rows: about {report.val_standard_error:.4f}; "
        f"picking the best of {report.trials_complete} such scores inflates it by about "
        f"{report.expected_selection_optimism:.4f} on average",
    ]
    lines += [f"- **Warning:** {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
