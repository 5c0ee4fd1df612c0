"""The shallow baseline every study should beat: logistic regression or ridge."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression, Ridge

from tuner.models.registry import register
from tuner.models.estimators.member import SklearnMember
from tuner.models.base import Family, ProblemSpec


class LinearFamily(Family):
    name = "linear"
    portfolio_rank = 10  # the cheapest default: the first trial of every new study
    picked = True
    description = "logistic regression (classification) or ridge (regression)"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        if spec.is_classification:
            return {"C": trial.suggest_float("C", 1e-4, 1e2, log=True)}
        return {"alpha": trial.suggest_float("alpha", 1e-4, 1e3, log=True)}

    def default_params(self, spec: ProblemSpec) -> dict:
        """scikit-learn's defaults: C = 1 for logistic regression, alpha = 1 for ridge."""
        return {"C": 1.0} if spec.is_classification else {"alpha": 1.0}

    def build(self, params: dict, spec: ProblemSpec) -> SklearnMember:
        if spec.is_classification:
            return SklearnMember(LogisticRegression(C=params["C"], max_iter=2000), classification=True)
        return SklearnMember(Ridge(alpha=params["alpha"]), classification=False)


register(LinearFamily())
