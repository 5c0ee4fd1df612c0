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
from tuner.models.registry import member_class

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
        """One folder, nothing pickled: each fold model in its own format (`fold-NN`), each fold's
        preprocessing as a skops file, `bag.json` naming the fold models' classes."""
        from tuner.core.safe_files import save_estimator

        path = Path(path)
        path.mkdir(parents=True)
        classes = []
        for index, (member, preprocessor) in enumerate(zip(self.members, self.preprocessors)):
            member.save(path / f"fold-{index:02d}")
            save_estimator(preprocessor, path / f"preprocessor-{index:02d}")
            classes.append(class_name(member))
        (path / BAG_DESCRIPTION).write_text(json.dumps({"view": self.view, "folds": len(self.members), "classes": classes}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaggedMember:
        from tuner.core.safe_files import load_estimator

        path = Path(path)
        description = json.loads((path / BAG_DESCRIPTION).read_text())
        members = [member_class(name).load(path / f"fold-{index:02d}") for index, name in enumerate(description["classes"])]
        preprocessors = [load_estimator(path / f"preprocessor-{index:02d}") for index in range(len(members))]
        return cls(members, preprocessors, description["view"])


def class_name(member: Member) -> str:
    """How a saved blend names a member's class (`tuner.models.registry.member_class` reads it back)."""
    return f"{type(member).__module__}:{type(member).__name__}"


def write_fold_models(members: list[Member], folder: Path) -> None:
    """Into `folder`, for a trial's bag kept on this machine (`tuner.study.trial_bags`): one joblib list
    of picklable fold models (scikit-learn, XGBoost), or each Keras fold model in its own `.keras`
    file with the classes to load them by. A bag that leaves the machine is written by `save`."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    if all(m.picklable for m in members):
        joblib.dump(members, folder / "folds.joblib")
        return
    for index, member in enumerate(members):
        member.save(folder / f"fold-{index:02d}")
    (folder / "classes.json").write_text(json.dumps([class_name(m) for m in members]))


def read_fold_models(folder: Path) -> list[Member]:
    import joblib

    if (folder / "folds.joblib").exists():
        return joblib.load(folder / "folds.joblib")
    return [member_class(name).load(folder / f"fold-{index:02d}")
            for index, name in enumerate(json.loads((folder / "classes.json").read_text()))]
