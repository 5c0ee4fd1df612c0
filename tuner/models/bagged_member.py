"""A bag: the K fold models of one trial behind one member, each reading its own fold's preprocessing.

What a K-fold trial leaves (`tuner.study.trial_bags`) and what an exported ensemble of a K-fold study holds.
No Optuna and no MLflow here: `tuner predict` loads bags without either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.core.metrics import renormalise
from tuner.models.base import Member

BAG_DESCRIPTION = "bag.json"


class BaggedMember(Member):
    """The K fold models of one trial behind one member: raw rows in, the folds' mean score out.

    Each fold model reads its own fold's preprocessing (fitted on that fold's training rows), so
    the bag takes raw rows (the `raw` view) and transforms them once per fold.
    """

    def __init__(self, members: list[Member], preprocessors: list[Any], view: str) -> None:
        super().__init__()
        self.members, self.preprocessors, self.view = members, preprocessors, view
        steps = [m.best_step_ for m in members]
        self.best_step_ = None if None in steps else int(round(float(np.median(steps))))

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> BaggedMember:
        raise NotImplementedError("a bag is made of fitted fold models (tuner.study.trial_bags.TrialBags.bag_of)")

    def predict_scores(self, X) -> np.ndarray:
        scores = [np.asarray(m.predict_scores(p.transform(X, self.view)), dtype=np.float64)
                  for m, p in zip(self.members, self.preprocessors)]
        mean = np.mean(scores, axis=0)
        return renormalise(mean)

    def save(self, path: str | Path) -> Path:
        """One folder: the fold models (`write_fold_models`) and each fold's preprocessing (joblib)."""
        import joblib

        path = Path(path)
        path.mkdir(parents=True)
        write_fold_models(self.members, path)
        joblib.dump(self.preprocessors, path / "preprocessors.joblib")
        (path / BAG_DESCRIPTION).write_text(json.dumps({"view": self.view, "folds": len(self.members)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaggedMember:
        import joblib

        path = Path(path)
        description = json.loads((path / BAG_DESCRIPTION).read_text())
        return cls(read_fold_models(path), joblib.load(path / "preprocessors.joblib"), description["view"])


def write_fold_models(members: list[Member], folder: Path) -> None:
    """Into `folder`: one joblib list of picklable fold models (scikit-learn, XGBoost), or each
    Keras fold model in its own `.keras` file with the classes to load them by."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    if all(m.picklable for m in members):
        joblib.dump(members, folder / "folds.joblib")
        return
    classes = []
    for index, member in enumerate(members):
        member.save(folder / f"fold-{index:02d}")
        classes.append(f"{type(member).__module__}:{type(member).__name__}")
    (folder / "classes.json").write_text(json.dumps(classes))


def read_fold_models(folder: Path) -> list[Member]:
    import importlib

    import joblib

    if (folder / "folds.joblib").exists():
        return joblib.load(folder / "folds.joblib")
    members = []
    for index, path in enumerate(json.loads((folder / "classes.json").read_text())):
        module, name = path.split(":")
        members.append(getattr(importlib.import_module(module), name).load(folder / f"fold-{index:02d}"))
    return members
