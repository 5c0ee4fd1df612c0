"""The metrics a study can optimise, each with its direction and its per-step twin in Keras / XGBoost.

Per-step twins let the pruner and early stopping watch the same quantity the study optimises, in
the same direction; the final score of a trial is always the scikit-learn value below.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "maximize" | "minimize"
    tasks: frozenset[str]
    score: Callable[[np.ndarray, np.ndarray], float]  # (y_true encoded, predictions) -> value
    keras_name: str  # the History key without the "val_" prefix
    xgboost_name: str  # the eval metric name XGBoost logs

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


def _labels(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(axis=1) if pred.ndim == 2 else pred


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


def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.accuracy_score(y, _labels(proba)))


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.log_loss(y, proba, labels=np.arange(proba.shape[1])))


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(skm.mean_squared_error(y, pred)))


def _mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(skm.mean_absolute_error(y, pred))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(skm.r2_score(y, pred))


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

_DEFAULTS = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}


def default_metric(task: str) -> str:
    return _DEFAULTS[task]
