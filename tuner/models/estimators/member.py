"""A Member around any scikit-learn estimator: no per-step pruning; an ensemble of trees (a forest)
grows in steps so that a search trial stops at its deadline with the trees it has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.core.deadline import deadline_set, past_deadline
from tuner.models.base import Member

# Below this many rows a forest predicts faster on one thread than through joblib's threads
# (200 trees, 2 cores: 64 ms against 213 ms for 1,000 rows; the threads win from about 50,000).
THREADED_PREDICT_ROWS = 50_000
TREES_PER_STEP = 50  # a forest's growth between two looks at the deadline (300 trees on 6,400 rows: ~2 s a step)
ESTIMATOR = "estimator.skops"


class SklearnMember(Member):
    def __init__(self, estimator: Any, classification: bool) -> None:
        super().__init__()
        self.estimator = estimator
        self.classification = classification

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> SklearnMember:
        """One fit; under a search trial's deadline, an estimator that can add trees to a fitted ensemble
        (`warm_start`, `n_estimators`: forests) adds them in steps and stops at the step that crosses it,
        as the boosters stop at a round (the same trees as one fit when it is not cut: the seeds are drawn in turn)."""
        params = self.estimator.get_params()
        if not deadline_set() or not {"warm_start", "n_estimators"} <= set(params) or params["warm_start"]:
            self.estimator.fit(X, y)
            return self
        trees = params["n_estimators"]
        try:
            for grown in range(min(TREES_PER_STEP, trees), trees + TREES_PER_STEP, TREES_PER_STEP):
                self.estimator.set_params(n_estimators=min(grown, trees), warm_start=True)
                self.estimator.fit(X, y)
                if past_deadline():
                    break
        finally:
            self.estimator.set_params(warm_start=False)
        return self

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        threads = getattr(self.estimator, "n_jobs", None)
        if threads is not None and len(X) < THREADED_PREDICT_ROWS:
            self.estimator.n_jobs = 1
        try:
            return self.estimator.predict_proba(X) if self.classification else self.estimator.predict(X)
        finally:
            if threads is not None:
                self.estimator.n_jobs = threads

    def save(self, path: str | Path) -> Path:
        """A folder: the estimator as a skops file (no pickle: it loads without running code) and `member.json`."""
        from tuner.core.safe_files import save_estimator

        path = Path(path)
        path.mkdir(parents=True)
        save_estimator(self.estimator, path / ESTIMATOR)
        (path / "member.json").write_text(json.dumps({"classification": self.classification}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SklearnMember:
        """Builds only trusted scikit-learn types (`tuner.core.safe_files`); no MLflow import (seconds per process)."""
        from tuner.core.safe_files import load_estimator

        path = Path(path)
        state = json.loads((path / "member.json").read_text())
        return cls(load_estimator(path / ESTIMATOR), state["classification"])
