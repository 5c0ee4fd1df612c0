"""scikit-learn's random forest: the book's strong tree baseline (chapter 1)."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from tuner.core.threads import fit_threads
from tuner.models.registry import register
from tuner.models.estimators.member import SklearnMember
from tuner.models.base import Family, ProblemSpec


MAX_DEPTH = 64  # deeper than any tree grows on tables this tool searches: the top of the range is "unlimited"


class RandomForestFamily(Family):
    name = "random_forest"
    portfolio_rank = 40
    picked = True
    gives_leaves = True
    description = "scikit-learn random forest"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, MAX_DEPTH, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 1.0),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
            "bootstrap": trial.suggest_categorical("bootstrap", [True, False]),
        }

    def default_params(self, spec: ProblemSpec) -> dict:
        """scikit-learn's defaults: 100 fully grown trees on bootstrap samples, sqrt(features) per split
        for classification and all of them for regression."""
        share = 1.0 if not spec.is_classification else max(0.1, min(1.0, spec.n_features ** 0.5 / max(spec.n_features, 1)))
        return {"n_estimators": 100, "max_depth": MAX_DEPTH, "max_features": share, "min_samples_leaf": 1,
                "bootstrap": True}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The default and AutoGluon's two first learned forests (tabular/configs/zeroshot/
        zeroshot_portfolio_2023.py, r195 and r127): 300 trees (AutoGluon's forest size) on 0.75 of the
        features with 1 row per leaf, and on every feature with 5; their leaf caps (28,000-48,000 leaves)
        never bind on tables this size, so depth stays unlimited."""
        grown = {"n_estimators": 300, "max_depth": MAX_DEPTH, "bootstrap": True}
        return {"default": self.default_params(spec),
                "autogluon r195": {**grown, "max_features": 0.75, "min_samples_leaf": 1},
                "autogluon r127": {**grown, "max_features": 1.0, "min_samples_leaf": 5}}

    def build(self, params: dict, spec: ProblemSpec) -> SklearnMember:
        forest = RandomForestClassifier if spec.is_classification else RandomForestRegressor
        return SklearnMember(forest(**params, n_jobs=fit_threads(), random_state=spec.seed),
                             classification=spec.is_classification)


register(RandomForestFamily())
