"""A new model family in one module, as a worked example: scikit-learn's k-nearest neighbours.

Saved as tuner/models/knn.py it is a family like the others: `tuner.models` imports every module
of its package, this module registers `knn` when imported, and a study file may then name it
(`families: [knn]`); nothing else is touched (docs/architecture.md). Here in tuner/examples/
nothing imports it, so `knn` is not one of the shipped families.
"""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from tuner.models.estimators.member import SklearnMember
from tuner.models.base import Family, ProblemSpec
from tuner.models.registry import register


class KNeighborsFamily(Family):
    name = "knn"
    description = "k-nearest neighbours, votes weighted uniformly or by distance"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 30),
                "weights": trial.suggest_categorical("weights", ["uniform", "distance"])}

    def build(self, params: dict, spec: ProblemSpec) -> SklearnMember:
        estimator = KNeighborsClassifier if spec.is_classification else KNeighborsRegressor
        return SklearnMember(estimator(n_neighbors=params["n_neighbors"], weights=params["weights"]),
                             classification=spec.is_classification)


register(KNeighborsFamily())
