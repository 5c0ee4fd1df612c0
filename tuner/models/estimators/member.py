"""A Member around any scikit-learn estimator: one-shot fits, no per-step pruning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.models.base import Member

# Below this many rows a forest predicts faster on one thread than through joblib's threads
# (200 trees, 2 cores: 64 ms against 213 ms for 1,000 rows; the threads win from about 50,000).
THREADED_PREDICT_ROWS = 50_000


class SklearnMember(Member):
    def __init__(self, estimator: Any, classification: bool) -> None:
        super().__init__()
        self.estimator = estimator
        self.classification = classification

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> SklearnMember:
        self.estimator.fit(X, y)
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
        """Unpickles the estimator file MLflow's sklearn flavour names, without importing MLflow (seconds
        per process); a format other than (cloud)pickle (skops) goes through `mlflow.sklearn.load_model`."""
        import os
        import pickle

        import yaml

        path = Path(path)
        state = json.loads((path / "member.json").read_text())
        flavor = yaml.load((path / "MLmodel").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        flavor = flavor["flavors"]["sklearn"]
        serialization = flavor.get("serialization_format", "pickle")
        if serialization not in ("pickle", "cloudpickle") or flavor.get("code"):
            import mlflow.sklearn

            return cls(mlflow.sklearn.load_model(str(path)), state["classification"])
        # MLflow's switch for refusing pickled models (default: allowed)
        if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower() not in ("true", "1"):
            from tuner.core.errors import TunerError

            raise TunerError(f"{path} holds a pickled scikit-learn model and MLFLOW_ALLOW_PICKLE_DESERIALIZATION "
                             "is not true; set it to true to load models you trust")
        with open(path / flavor["pickled_model"], "rb") as file:
            if serialization == "cloudpickle":
                import cloudpickle

                return cls(cloudpickle.load(file), state["classification"])
            return cls(pickle.load(file), state["classification"])
