"""A Member around any scikit-learn estimator: one-shot fits, no per-step pruning."""

from __future__ import annotations

from typing import Any

import numpy as np

from tuner.models.base import Member


class SklearnMember(Member):
    def __init__(self, estimator: Any, classification: bool) -> None:
        super().__init__()
        self.estimator = estimator
        self.classification = classification

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> SklearnMember:
        self.estimator.fit(X, y)
        return self

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        if self.classification:
            return self.estimator.predict_proba(X)
        return self.estimator.predict(X)
