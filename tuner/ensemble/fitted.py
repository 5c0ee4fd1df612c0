"""A fitted ensemble that predicts from raw rows: what the ensemble stage hands to export.

It holds what a prediction needs and nothing from the search: the preprocessing fitted on the
train + validation rows, the target's labels, the members refitted there, and the combiner that
turns their scores into one. `save(folder)` writes each member in its own library's format
(`.keras`, XGBoost JSON, scikit-learn objects and the preprocessing as skops files) beside one JSON
description and `checksums.json`: nothing in the folder is a pickle, so loading it runs no code it
carries. `load(folder)` checks every file against the checksums first, builds only tuner's own
member classes and trusted scikit-learn types, and gives identical predictions.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tuner.core.safe_files import load_estimator, save_estimator, verify_checksums, write_checksums
from tuner.data.preprocess import FeaturePreprocessor
from tuner.models import Member
from tuner.models.bagged_member import class_name
from tuner.models.registry import member_class

DESCRIPTION = "ensemble.json"
RAW_VIEW = "raw"  # a member that preprocesses rows itself (a bag: one preprocessing per fold) reads them raw
PREPROCESSOR = "preprocessor.skops"
EXAMPLE_TABLE, EXAMPLE_ARRAY = "example.parquet", "example.npy"


@dataclass
class FittedMember:
    """One refitted configuration and where it came from."""

    study: str
    trial: int
    family: str
    params: dict[str, Any]
    steps: int | None  # epochs / boosting rounds it was refitted for
    view: str  # the feature view it reads (data.preprocess.VIEWS)
    member: Member

    @property
    def label(self) -> str:
        return f"{self.study}#{self.trial} {self.family}"

    def record(self) -> dict[str, Any]:
        return {"study": self.study, "trial": self.trial, "family": self.family, "params": self.params,
                "steps": self.steps, "view": self.view}


class Combiner(ABC):
    """Turns member scores (and, for stacked or wide-and-deep blends, the features) into one score."""

    kind: ClassVar[str]

    @abstractmethod
    def combine(self, scores: list[np.ndarray], members: list[FittedMember],
                views: dict[str, Any]) -> np.ndarray:
        """`scores[i]` is member i's `predict_scores`; `views` maps view name to transformed rows."""

    def views(self) -> set[str]:
        """Views the combiner reads beyond the members' own."""
        return set()

    def to_record(self, folder: Path) -> dict[str, Any]:
        """JSON-ready state; large state goes to files in `folder`."""
        return {}

    @classmethod
    def from_record(cls, record: dict[str, Any], folder: Path) -> Combiner:
        return cls()


COMBINERS: dict[str, type[Combiner]] = {}


def register_combiner(cls: type[Combiner]) -> type[Combiner]:
    if cls.kind in COMBINERS:
        raise RuntimeError(f"combiner {cls.kind!r} is registered twice")
    COMBINERS[cls.kind] = cls
    return cls


@register_combiner
@dataclass
class WeightedAverage(Combiner):
    """Non-negative weights summing to one: single model, plain average, greedy selection, optimised."""

    weights: np.ndarray = field(default_factory=lambda: np.ones(1))
    kind: ClassVar[str] = "weighted"

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.ndim != 1 or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
            raise ValueError(f"blend weights must be non-negative and sum to one, got {weights.tolist()}")
        self.weights = weights

    def combine(self, scores, members, views) -> np.ndarray:
        return sum(w * np.asarray(s, dtype=np.float64) for w, s in zip(self.weights, scores))

    def to_record(self, folder: Path) -> dict[str, Any]:
        return {"weights": self.weights.tolist()}

    @classmethod
    def from_record(cls, record: dict[str, Any], folder: Path) -> WeightedAverage:
        return cls(np.asarray(record["weights"]))


@dataclass
class FittedEnsemble:
    """Raw rows in, scores / labels out. `name` is the blend's name (`weighted`, `stacked`, ...)."""

    name: str
    task: str
    metric: str
    classes: list[Any] | None  # original target labels, in score-column order; None for regression
    preprocessor: FeaturePreprocessor
    members: list[FittedMember]
    combiner: Combiner
    fingerprint: str  # of the data the members were refitted on (the study's)
    split_digest: str
    scores: dict[str, float] = field(default_factory=dict)  # e.g. {"oof_roc_auc": .., "test_roc_auc": ..}
    example: pd.DataFrame | np.ndarray | None = None  # a few raw training rows: export's input example

    def transform(self, X: pd.DataFrame | np.ndarray) -> dict[str, Any]:
        needed = {m.view for m in self.members} | self.combiner.views()
        return {view: X if view == RAW_VIEW else self.preprocessor.transform(X, view) for view in sorted(needed)}

    def predict_scores(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) or values (N,) from raw rows shaped like the training data."""
        views = self.transform(X)
        scores = [m.member.predict_scores(views[m.view]) for m in self.members]
        return self.combiner.combine(scores, self.members, views)

    def predict_frame(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """`prediction` (the label or value), plus `proba_<label>` per class for classification."""
        scores = self.predict_scores(X)
        if self.classes is None:
            return pd.DataFrame({"prediction": scores})
        frame = pd.DataFrame({"prediction": np.asarray(self.classes, dtype=object)[scores.argmax(axis=1)]})
        for column, label in enumerate(self.classes):
            frame[f"proba_{label}"] = scores[:, column]
        return frame

    def serving_config(self) -> dict[str, Any]:
        """The blend's kind, members, weights and inputs as plain values: an export's MLflow
        `model_config`, which serving checks against the blend it loads."""
        weights = self.combiner.weights.tolist() if isinstance(self.combiner, WeightedAverage) else None
        members = [{"study": m.study, "trial": m.trial, "family": m.family, "view": m.view} for m in self.members]
        if isinstance(self.example, pd.DataFrame):
            kinds = {**{c: "numeric" for c in self.preprocessor.numeric_},
                     **{c: "categorical" for c in self.preprocessor.categorical_},
                     **{c: "text" for c in self.preprocessor.text_columns_}}
            inputs = {"kind": "table", "columns": {str(c): kinds[c] for c in self.example.columns}}
        else:
            inputs = {"kind": "array", "shape": list(self.example.shape[1:]), "dtype": str(self.example.dtype)}
        return {"blend": self.name, "kind": self.combiner.kind, "task": self.task,
                "classes": None if self.classes is None else [_plain(c) for c in self.classes],
                "members": members, "weights": weights, "preprocessing": inputs}

    def save(self, folder: str | Path, saved: dict[int, Path] | None = None) -> Path:
        """Write the ensemble; `saved` (member id -> where it was written) lets blends that share a
        member hard-link its files instead of writing them again."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=False)
        members = []
        for index, fitted in enumerate(self.members):
            home = folder / "members" / f"{index:02d}-{fitted.family}"  # one folder per member, whatever it writes
            earlier = None if saved is None else saved.get(id(fitted.member))
            if earlier is not None:
                shutil.copytree(earlier.parent, home, copy_function=os.link)
                path = home / earlier.name
            else:
                home.mkdir(parents=True)
                path = fitted.member.save(home / "member")
                if saved is not None:
                    saved[id(fitted.member)] = path
            members.append({**fitted.record(), "path": path.relative_to(folder).as_posix(),
                            "member_class": class_name(fitted.member)})
        save_estimator(self.preprocessor, folder / PREPROCESSOR)
        if isinstance(self.example, pd.DataFrame):
            self.example.to_parquet(folder / EXAMPLE_TABLE)
        elif self.example is not None:
            np.save(folder / EXAMPLE_ARRAY, self.example)
        description = {
            "name": self.name, "task": self.task, "metric": self.metric,
            "classes": None if self.classes is None else [_plain(c) for c in self.classes],
            "members": members, "combiner": {"kind": self.combiner.kind, **self.combiner.to_record(folder)},
            "fingerprint": self.fingerprint, "split_digest": self.split_digest, "scores": self.scores,
        }
        (folder / DESCRIPTION).write_text(json.dumps(description, indent=2))
        write_checksums(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FittedEnsemble:
        """Raises `ChangedFileError` (tuner.core.safe_files) when a file differs from what `save` wrote."""
        folder = Path(folder)
        verify_checksums(folder)
        description = json.loads((folder / DESCRIPTION).read_text())
        members = []
        for record in description["members"]:
            loaded = member_class(record["member_class"]).load(folder / record["path"])
            members.append(FittedMember(record["study"], record["trial"], record["family"], record["params"],
                                        record["steps"], record["view"], loaded))
        combiner_record = dict(description["combiner"])
        combiner = COMBINERS[combiner_record.pop("kind")].from_record(combiner_record, folder)
        example = (pd.read_parquet(folder / EXAMPLE_TABLE) if (folder / EXAMPLE_TABLE).exists()
                   else np.load(folder / EXAMPLE_ARRAY, allow_pickle=False) if (folder / EXAMPLE_ARRAY).exists()
                   else None)
        return cls(description["name"], description["task"], description["metric"], description["classes"],
                   load_estimator(folder / PREPROCESSOR), members, combiner, description["fingerprint"],
                   description["split_digest"], description["scores"], example)


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-ready Python values."""
    return value.item() if isinstance(value, np.generic) else value
