"""Choosing blend weights from out-of-fold predictions: matrices in, weights out (no model objects).

- `drop_near_duplicates`: the book's rule, do not blend the same network trained twice;
- `greedy_selection`: Caruana et al. (2004) ensemble selection with replacement, as in
  auto-sklearn and AutoGluon: repeatedly add the member that most improves the blend's metric;
- `optimised_weights`: non-negative weights summing to one minimising a smooth loss (log loss
  for classification, squared error for regression) with SciPy's SLSQP;
- `cross_fitted`: a weight rule's out-of-fold score, its weights learned on the other folds, so
  a blend's score is as honest as a single member's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from tuner.core.metrics import Metric, score_many

GREEDY_ROUNDS = 50
WeightRule = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


def as_vector(scores: np.ndarray) -> np.ndarray:
    """One number per prediction: P(class 1) for binary, every class probability for multiclass."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores[:, 1]
    return scores.ravel()


def correlation_matrix(predictions: list[np.ndarray]) -> np.ndarray:
    vectors = np.column_stack([as_vector(p) for p in predictions])
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(vectors, rowvar=False) if vectors.shape[1] > 1 else np.ones((1, 1))
    return np.nan_to_num(np.atleast_2d(matrix), nan=0.0)


@dataclass
class Dropped:
    dropped: str
    kept: str
    correlation: float


def drop_near_duplicates(labels: list[str], predictions: list[np.ndarray], oof_scores: list[float],
                         metric: Metric, threshold: float) -> tuple[list[int], list[Dropped]]:
    """Indices kept (best first) and what was dropped: a member correlating above `threshold`
    with a better one already kept."""
    order = sorted(range(len(labels)), key=lambda i: oof_scores[i], reverse=metric.sign > 0)
    matrix = correlation_matrix(predictions)
    kept: list[int] = []
    dropped: list[Dropped] = []
    for i in order:
        twin = next((k for k in kept if matrix[i, k] > threshold), None)
        if twin is None:
            kept.append(i)
        else:
            dropped.append(Dropped(labels[i], labels[twin], float(matrix[i, twin])))
    return kept, dropped


def blend(predictions: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * np.asarray(p, dtype=np.float64) for w, p in zip(weights, predictions))


def greedy_selection(predictions: list[np.ndarray], y: np.ndarray, metric: Metric,
                     rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Caruana's ensemble selection with replacement; weights are how often each member was picked.

    Each round scores adding every candidate at once (`score_many`), so hundreds of trials are
    weighed in seconds; a tie goes to the earlier (better ranked) candidate.
    """
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    counts = np.zeros(len(predictions))
    total = np.zeros_like(stacked[0])
    pick = np.argmax if metric.sign > 0 else np.argmin
    for step in range(1, rounds + 1):
        best = int(pick(score_many(metric, y, (total + stacked) / step)))
        counts[best] += 1
        total = total + stacked[best]
    return counts / counts.sum()


def optimised_weights(predictions: list[np.ndarray], y: np.ndarray, classification: bool) -> np.ndarray:
    """Non-negative weights summing to one that minimise log loss (classification) or squared error."""
    n = len(predictions)
    if n == 1:
        return np.ones(1)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    if classification:
        rows = np.arange(len(y))
        picked = stacked[:, rows, y.astype(int)]  # each member's probability of the true class

        def loss(w: np.ndarray) -> float:
            return float(-np.mean(np.log(np.clip(w @ picked, 1e-12, None))))
    else:
        scale = float(np.var(y)) or 1.0

        def loss(w: np.ndarray) -> float:
            return float(np.mean((np.tensordot(w, stacked, axes=1) - y) ** 2) / scale)

    result = minimize(loss, np.full(n, 1.0 / n), method="SLSQP", bounds=[(0.0, 1.0)] * n,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}])
    weights = np.clip(result.x, 0.0, None)
    weights[weights < 1e-4] = 0.0
    return weights / weights.sum()


def cross_fitted(rule: WeightRule, predictions: list[np.ndarray], y: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each fold's rows blended with weights the rule learned on the other folds' rows."""
    out = np.empty_like(np.asarray(predictions[0], dtype=np.float64))
    for fold in np.unique(ids):
        held = ids == fold
        weights = rule([p[~held] for p in predictions], y[~held])
        out[held] = blend([p[held] for p in predictions], weights)
    return out
