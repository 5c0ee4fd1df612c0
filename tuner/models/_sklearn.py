"""A Member around any scikit-learn estimator: one-shot fits, no per-step pruning."""

from __future__ import annotations

import json
from pathlib import Path
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

    def save(self, path: str | Path) -> Path:
        """MLflow's scikit-learn format (a folder with MLmodel and the pickled estimator)."""
        import mlflow.sklearn

        import cloudpickle
        import sklearn

        path = Path(path)
        # requirements named, not inferred (MLflow infers them in a subprocess, seconds per member); an
        # exported ensemble pins its own environment
        mlflow.sklearn.save_model(self.estimator, str(path), serialization_format="cloudpickle",
                                  pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                                                    f"cloudpickle=={cloudpickle.__version__}"])
        (path / "member.json").write_text(json.dumps({"classification": self.classification}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SklearnMember:
        import mlflow.sklearn

        path = Path(path)
        state = json.loads((path / "member.json").read_text())
        return cls(mlflow.sklearn.load_model(str(path)), state["classification"])
