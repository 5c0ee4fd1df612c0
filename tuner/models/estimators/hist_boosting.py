"""scikit-learn's histogram gradient boosting: a fast booster with native categoricals and missing values.

It reads the `native` view (raw numbers, NaN left in, one code per categorical column) and stops
early on the validation rows it is handed, like the XGBoost family; without them (a refit) it runs
for the number of iterations early stopping found.
"""

from __future__ import annotations

from pathlib import Path


from tuner.models import register
from tuner.models.base import BoosterMember, Family, ProblemSpec


class HistBoostingMember(BoosterMember):
    def _estimator(self, max_iter: int, early_stopping: bool):
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        model_class = HistGradientBoostingClassifier if self.spec.is_classification else HistGradientBoostingRegressor
        categorical = list(self.spec.native_categorical)
        return model_class(**self.params, max_iter=max_iter, early_stopping=early_stopping,
                           n_iter_no_change=self.spec.patience * 2, categorical_features=categorical or None,
                           random_state=self.spec.seed)

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> HistBoostingMember:
        if X_val is None:
            self.model_ = self._estimator(self.spec.max_rounds, early_stopping=False).fit(X, y)
            self.best_step_ = int(self.model_.n_iter_)
            return self
        self.model_ = self._estimator(self.spec.max_rounds, early_stopping=True).fit(X, y, X_val=X_val, y_val=y_val)
        self.best_step_ = int(self.model_.n_iter_)
        self.curves_ = {"val_loss": [float(v) for v in -self.model_.validation_score_[1:]]}
        return self

    def save(self, path: str | Path) -> Path:
        """The estimator as a skops file (loads without running code), the params and spec beside it."""
        from tuner.core.safe_files import save_estimator

        path = save_estimator(self.model_, Path(path))
        self.write_state(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HistBoostingMember:
        from tuner.core.safe_files import SKOPS_SUFFIX, load_estimator

        path = Path(path).with_suffix(SKOPS_SUFFIX)
        member = cls.from_state(path)
        member.model_ = load_estimator(path)
        return member


class HistBoostingFamily(Family):
    name = "hist_boosting"
    portfolio_rank = 20
    picked = True
    view = "native"
    description = "scikit-learn HistGradientBoosting (native categoricals and missing values), early stopping"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 128, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True),
            "max_features": trial.suggest_float("max_features", 0.3, 1.0),
        }

    def default_params(self, spec: ProblemSpec) -> dict:
        """scikit-learn's defaults: learning rate 0.1, 31 leaves, 20 rows per leaf, no L2 (the range's floor)."""
        return {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 1e-6,
                "max_features": 1.0}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The default and pytabkit's tuned LightGBM default carried over (HistGradientBoosting is LightGBM's
        algorithm): LGBM_TD_CLASS lr 0.04, 50 leaves, 40 rows per leaf; _REG 0.05, 100, 3
        (pytabkit/models/sklearn/default_params.py). Its row sampling has no twin here."""
        tuned = ({"learning_rate": 0.04, "max_leaf_nodes": 50, "min_samples_leaf": 40} if spec.is_classification
                 else {"learning_rate": 0.05, "max_leaf_nodes": 100, "min_samples_leaf": 3})
        return {"default": self.default_params(spec),
                "pytabkit LGBM_TD": {**tuned, "l2_regularization": 1e-6, "max_features": 1.0}}

    def build(self, params: dict, spec: ProblemSpec) -> HistBoostingMember:
        return HistBoostingMember(params, spec)


register(HistBoostingFamily())
