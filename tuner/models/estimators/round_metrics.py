"""Study metrics the boosting libraries do not compute per round themselves, in the form they all score."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows labelled right, from class probabilities (N x classes) or P(class 1) (N,)."""
    labels = y_pred.argmax(axis=1) if y_pred.ndim == 2 else (y_pred > 0.5)
    return float(np.mean(labels == y_true))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - np.mean(y_true)) ** 2))
