"""scikit-learn's random forest: the book's strong tree baseline (chapter 1)."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from tuner.models.registry import register
from tuner.models._sklearn import SklearnMember
from tuner.models.base import Family, ProblemSpec


class RandomForestFamily(Family):
    name = "random_forest"
    description = "scikit-learn random forest"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 32, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 1.0),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
            "bootstrap": trial.suggest_categorical("bootstrap", [True, False]),
        }

    def build(self, params: dict, spec: ProblemSpec) -> SklearnMember:
        forest = RandomForestClassifier if spec.is_classification else RandomForestRegressor
        return SklearnMember(forest(**params, n_jobs=-1, random_state=spec.seed),
                             classification=spec.is_classification)


register(RandomForestFamily())
