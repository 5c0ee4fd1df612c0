"""The metrics a study can optimise, each with its direction and its per-step twin in Keras / XGBoost.

Per-step twins let the pruner and early stopping watch the same quantity the study optimises, in
the same direction; the final score of a trial is always the scikit-learn value below.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning


def direction_sign(direction: Any) -> int:
    """+1 where higher is better, -1 where lower is, so `sign * score` always grows with quality.

    Takes a metric's direction ("maximize" / "minimize") or an Optuna `StudyDirection`, so every
    ranking of trials and scores reads the direction the same way.
    """
    return 1 if getattr(direction, "name", direction).lower() == "maximize" else -1


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "maximize" | "minimize"
    tasks: frozenset[str]
    score: Callable[[np.ndarray, np.ndarray], float]  # (y_true encoded, predictions) -> value
    keras_name: str  # the History key without the "val_" prefix
    xgboost_name: str  # the eval metric name XGBoost logs

    @property
    def sign(self) -> int:
        """+1 for a metric to maximise, -1 for one to minimise (`direction_sign`)."""
        return direction_sign(self.direction)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.sign > 0 else a < b


def renormalise(scores: np.ndarray) -> np.ndarray:
    """Class probabilities (N x classes) as float64 rows summing to one; regression values (N,) as
    they are. float32 probabilities (XGBoost, a Keras softmax) miss one by more than scikit-learn's
    checks allow, and means of them drift further."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores / scores.sum(axis=1, keepdims=True) if scores.ndim == 2 else scores


def _labels(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(axis=1) if pred.ndim == 2 else pred


def rankdata(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Average ranks from 1, ties sharing the mean of their ranks (scipy.stats.rankdata's default),
    in numpy: importing scipy.stats costs a second of every command's start-up."""
    values = np.asarray(values)
    if axis is not None:
        return np.apply_along_axis(rankdata, axis, values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    group = np.r_[True, ordered[1:] != ordered[:-1]].cumsum()  # 1, 1, 2, 3, 3, ... per distinct value
    ends = np.cumsum(np.bincount(group))  # ends[g]: how many values are in groups 1..g
    ranks = np.empty(len(values))
    ranks[order] = (ends[group] + ends[group - 1] + 1) / 2
    return ranks


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """The Mann-Whitney form of scikit-learn's ROC AUC (ties count half): the same value, computed
    from ranks, so the thousands of bootstrap resamples behind every test interval stay cheap."""
    positive = np.asarray(y) == 1
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0:  # as scikit-learn: undefined, said once, NaN
        warnings.warn("Only one class is present in y_true. ROC AUC score is not defined in that case.",
                      UndefinedMetricWarning, stacklevel=2)
        return math.nan
    if not np.isfinite(proba[:, 1]).all():
        raise ValueError("Input contains NaN or infinity.")
    ranks = rankdata(proba[:, 1])
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


# The rest in plain numpy: the same values as scikit-learn's, without its input checks, which cost
# a millisecond a call and dominate thousands of bootstrap resamples and ensemble-selection steps.
def _checked(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, pred = np.asarray(y), np.asarray(pred, dtype=np.float64)
    if len(y) != len(pred):
        raise ValueError(f"{len(y)} targets but {len(pred)} predictions")
    if not np.isfinite(pred).all():
        raise ValueError("Input contains NaN or infinity.")
    return y, pred


def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    y, proba = _checked(y, proba)
    return float(np.mean(_labels(proba) == y))


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    y, proba = _checked(y, proba)
    eps = np.finfo(proba.dtype).eps
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y.astype(int)], eps, 1 - eps))))


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _checked(y, pred)
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def _mae(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _checked(y, pred)
    return float(np.mean(np.abs(y - pred)))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _checked(y, pred)
    total, residual = np.sum((y - y.mean()) ** 2), np.sum((y - pred) ** 2)
    if total == 0:  # as scikit-learn's force_finite: a constant target is 1.0 when hit exactly, else 0.0
        return 1.0 if residual == 0 else 0.0
    return float(1.0 - residual / total)


CLASSIFICATION = frozenset({"binary", "multiclass"})
REGRESSION = frozenset({"regression"})

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("roc_auc", "maximize", frozenset({"binary"}), _roc_auc, "auc", "auc"),
        Metric("accuracy", "maximize", CLASSIFICATION, _accuracy, "accuracy", "accuracy"),
        Metric("log_loss", "minimize", CLASSIFICATION, _log_loss, "loss", "logloss"),
        Metric("rmse", "minimize", REGRESSION, _rmse, "rmse", "rmse"),
        Metric("mae", "minimize", REGRESSION, _mae, "mae", "mae"),
        Metric("r2", "maximize", REGRESSION, _r2, "r2", "r2"),
    ]
}

def _many_roc_auc(y: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    positive = np.asarray(y) == 1
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(stacked[:, :, 1], axis=1)
    return (ranks[:, positive].sum(axis=1) - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def _many_log_loss(y: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    picked = stacked[:, np.arange(len(y)), np.asarray(y, dtype=int)]
    return -np.mean(np.log(np.clip(picked, eps, 1 - eps)), axis=1)


_MANY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": _many_roc_auc,
    "accuracy": lambda y, stacked: np.mean(stacked.argmax(axis=2) == y, axis=1),
    "log_loss": _many_log_loss,
    "rmse": lambda y, stacked: np.sqrt(np.mean((stacked - y) ** 2, axis=1)),
    "mae": lambda y, stacked: np.mean(np.abs(stacked - y), axis=1),
    "r2": lambda y, stacked: 1.0 - np.sum((stacked - y) ** 2, axis=1) / np.sum((y - np.mean(y)) ** 2),
}


def score_many(metric: Metric, y: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    """`metric.score(y, stacked[i])` for every i at once (k x rows [x classes]): what lets ensemble
    selection weigh hundreds of trials in seconds. Same values as `score` up to rounding."""
    return np.asarray(_MANY[metric.name](y, stacked), dtype=np.float64)


_DEFAULTS = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}


def default_metric(task: str) -> str:
    return _DEFAULTS[task]
