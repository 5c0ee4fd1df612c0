"""Gradient boosted trees with XGBoost: early stopping on the study's metric, per-round pruning.

It reads the `native` view: raw numbers with their missing values left to the booster, and each
categorical column as one code that XGBoost splits on directly (`enable_categorical`), not a
one-hot block per level.
"""

from __future__ import annotations

from pathlib import Path

from tuner.core.deadline import past_deadline
from tuner.core.metrics import METRICS
from tuner.core.threads import fit_threads
from tuner.models.registry import register
from tuner.models.base import BoosterMember, Family, ProblemSpec
from tuner.models.estimators.round_metrics import accuracy, r2


_CALLABLE_METRICS = {"accuracy": accuracy, "r2": r2}  # metrics XGBoost does not compute itself


def eval_metric_for(spec: ProblemSpec):
    """The per-round twin of the study metric, as XGBoost names it in its evaluation log."""
    name = METRICS[spec.metric].xgboost_name
    if name in _CALLABLE_METRICS:
        return _CALLABLE_METRICS[name], name
    if name == "logloss" and spec.task == "multiclass":
        return "mlogloss", "mlogloss"
    return name, name


class XGBoostMember(BoosterMember):
    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> XGBoostMember:
        import xgboost as xgb

        metric, logged_name = eval_metric_for(self.spec)
        maximize = METRICS[self.spec.metric].sign > 0
        callbacks = []
        if X_val is not None:
            callbacks.append(xgb.callback.EarlyStopping(
                rounds=self.spec.patience * 5, metric_name=logged_name, data_name="validation_0",
                maximize=maximize, save_best=True,
            ))
            callbacks.append(_stop_at_deadline())
        if trial is not None and X_val is not None:
            from optuna_integration.xgboost import XGBoostPruningCallback

            callbacks.append(XGBoostPruningCallback(trial, f"validation_0-{logged_name}"))
        model_class = xgb.XGBClassifier if self.spec.is_classification else xgb.XGBRegressor
        categorical = set(self.spec.native_categorical)
        self.model_ = model_class(
            **self.params, n_estimators=self.spec.max_rounds, tree_method="hist",
            eval_metric=metric, callbacks=callbacks, random_state=self.spec.seed, n_jobs=fit_threads(),
            enable_categorical=bool(categorical),
            feature_types=["c" if i in categorical else "q" for i in range(X.shape[1])] if categorical else None,
        )
        if X_val is None:
            self.model_.fit(X, y, verbose=False)
            self.best_step_ = self.spec.max_rounds
            return self
        self.model_.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)  # a pruned fit raises here
        self.model_.set_params(callbacks=None)  # they hold the trial and the clock: a bag pickles the model
        self.curves_ = {f"val_{logged_name}": list(self.model_.evals_result()["validation_0"][logged_name])}
        self.best_step_ = int(self.model_.best_iteration) + 1
        return self

    def save(self, path: str | Path) -> Path:
        """XGBoost's own JSON model, with the params and spec beside it."""
        path = Path(path).with_suffix(".json")
        self.model_.save_model(path)
        self.write_state(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> XGBoostMember:
        import xgboost as xgb

        path = Path(path).with_suffix(".json")
        member = cls.from_state(path)
        member.model_ = (xgb.XGBClassifier if member.spec.is_classification else xgb.XGBRegressor)()
        member.model_.load_model(path)
        return member


class XGBoostFamily(Family):
    name = "xgboost"
    portfolio_rank = 30
    picked = True
    gives_leaves = True
    view = "native"
    description = "XGBoost gradient boosted trees (hist, native categoricals and missing values), per-round pruning"
    requires = {"xgboost": "xgboost", "optuna_integration": "optuna-integration"}

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        }

    def default_params(self, spec: ProblemSpec) -> dict:
        """XGBoost's own defaults (eta 0.3, depth 6, no sampling, lambda 1; alpha at the range's floor)."""
        return {"learning_rate": 0.3, "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0,
                "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 1e-3}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The default, pytabkit's tuned default and a learned AutoGluon XGBoost.

        pytabkit XGB_TD_CLASS / _REG (pytabkit/models/sklearn/default_params.py): lr 0.08, depth 6, 0.65 of
        the rows, 0.9 of the features per level (here per tree) (regression: 0.05, depth 9, min child
        weight 2, 0.7 of the rows, every feature); its min child weight 5e-6 and lambda 0 sit at this
        space's floor. AutoGluon r89 (tabular/configs/zeroshot/zeroshot_portfolio_2023.py): lr 0.0878,
        depth 5, min child weight 0.629, 0.663 of the features; the ones ranked above it (r33, lr 0.018 at
        depth 10) need AutoGluon's 10,000 rounds.
        """
        tuned = ({"learning_rate": 0.08, "max_depth": 6, "min_child_weight": 0.5, "subsample": 0.65,
                  "colsample_bytree": 0.9} if spec.is_classification else
                 {"learning_rate": 0.05, "max_depth": 9, "min_child_weight": 2.0, "subsample": 0.7,
                  "colsample_bytree": 1.0})
        return {"default": self.default_params(spec),
                "pytabkit XGB_TD": {**tuned, "reg_lambda": 1e-3, "reg_alpha": 1e-3},
                "autogluon r89": {"learning_rate": 0.0878, "max_depth": 5, "min_child_weight": 0.629, "subsample": 1.0,
                                  "colsample_bytree": 0.663, "reg_lambda": 1.0, "reg_alpha": 1e-3}}

    def build(self, params: dict, spec: ProblemSpec) -> XGBoostMember:
        return XGBoostMember(params, spec)


register(XGBoostFamily())


def _stop_at_deadline():
    """A search trial ends at the round that crosses the study's timeout (the best round is kept)."""
    import xgboost as xgb

    class StopAtDeadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            return past_deadline()

    return StopAtDeadline()
