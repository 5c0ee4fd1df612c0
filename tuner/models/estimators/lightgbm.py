"""Gradient boosted trees with LightGBM: leaf-wise trees, early stopping on the study's metric,
per-round pruning.

It reads the `native` view like the XGBoost family: missing values left to the booster as NaN, and
each categorical column as one code LightGBM splits on by grouping its levels (`categorical_feature`).
A fitted member is LightGBM's own model text file, read back without TensorFlow or a pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuner.core.deadline import past_deadline
from tuner.core.threads import fit_threads
from tuner.core.metrics import METRICS
from tuner.models.base import BoosterMember, Family, ProblemSpec
from tuner.models.estimators.round_metrics import accuracy, r2
from tuner.models.registry import register

_BUILT_IN = {"roc_auc": "auc", "rmse": "rmse", "mae": "l1"}  # study metric -> LightGBM's per-round name
_CALLABLE = {"accuracy": accuracy, "r2": r2}  # scored each round by `feval`
# Below this many training rows LightGBM fits on one thread: its OpenMP threads wait by spinning, and
# on a 2-core host shared with other work two threads fitted 5-10x slower than one (3,000 rows: 0.3 s
# against 1.4-4.8 s; 30,000 rows: 0.5-0.9 s against 2.6-8.1 s). From here on it takes every core, as
# the XGBoost family does.
THREADED_FIT_ROWS = 50_000


def round_metric(spec: ProblemSpec) -> str:
    """The per-round twin of the study metric, as LightGBM names it in its evaluation log."""
    if spec.metric == "log_loss":
        return "multi_logloss" if spec.task == "multiclass" else "binary_logloss"
    return _BUILT_IN.get(spec.metric, spec.metric)


def _feval(spec: ProblemSpec):
    """LightGBM's custom-metric form of a study metric it lacks (higher is better for both), else None."""
    score = _CALLABLE.get(spec.metric)
    if score is None:
        return None
    return lambda predictions, data: (spec.metric, score(data.get_label(), predictions), True)


class LightGBMMember(BoosterMember):
    picklable = False  # a bag writes each fold model as LightGBM's text file, never a pickle

    def _booster_params(self, rows: int) -> dict:
        spec = self.spec
        objective = {"binary": "binary", "multiclass": "multiclass"}.get(spec.task, "regression")
        params = {**self.params, "objective": objective, "bagging_freq": 1, "seed": spec.seed,
                  "deterministic": True, "force_col_wise": True, "verbose": -1,
                  "num_threads": fit_threads() if rows >= THREADED_FIT_ROWS else 1,
                  "metric": "None" if spec.metric in _CALLABLE else round_metric(spec)}
        if spec.task == "multiclass":
            params["num_class"] = spec.n_classes
        return params

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> LightGBMMember:
        import lightgbm as lgb

        categorical = list(self.spec.native_categorical) or "auto"
        train = lgb.Dataset(X, y, categorical_feature=categorical, params={"verbose": -1})
        if X_val is None:
            self.model_ = lgb.train(self._booster_params(len(X)), train, num_boost_round=self.spec.max_rounds)
            self.best_step_ = self.spec.max_rounds
            return self
        metric = round_metric(self.spec)
        logged: dict = {}
        callbacks = [lgb.early_stopping(self.spec.patience * 5, verbose=False), lgb.record_evaluation(logged),
                     _StopAtDeadline()]
        if trial is not None:
            from optuna_integration.lightgbm import LightGBMPruningCallback

            callbacks.append(LightGBMPruningCallback(trial, metric, valid_name="validation"))
        valid = lgb.Dataset(X_val, y_val, reference=train, categorical_feature=categorical)
        try:
            self.model_ = lgb.train(self._booster_params(len(X)), train, num_boost_round=self.spec.max_rounds,
                                    valid_sets=[valid], valid_names=["validation"], feval=_feval(self.spec),
                                    callbacks=callbacks)  # a pruned fit raises here
        finally:
            curve = [float(v) for v in logged.get("validation", {}).get(metric, [])]
            self.curves_ = {f"val_{metric}": curve}
        # the first best round, as early stopping keeps it (a stop at the deadline keeps it too)
        self.best_step_ = int(np.argmax(METRICS[self.spec.metric].sign * np.asarray(curve))) + 1
        return self

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        scores = self.model_.predict(X, num_iteration=self.best_step_)
        return np.column_stack([1.0 - scores, scores]) if self.spec.task == "binary" else scores

    def save(self, path: str | Path) -> Path:
        """LightGBM's model text file (the rounds up to the best), the params and spec beside it."""
        path = Path(path).with_suffix(".txt")
        self.model_.save_model(path, num_iteration=self.best_step_)
        self.write_state(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LightGBMMember:
        import lightgbm as lgb

        path = Path(path).with_suffix(".txt")
        member = cls.from_state(path)
        member.model_ = lgb.Booster(model_file=str(path))
        return member


class LightGBMFamily(Family):
    name = "lightgbm"
    portfolio_rank = 50
    picked = True
    view = "native"
    description = "LightGBM gradient boosted trees (leaf-wise, native categoricals and missing values), per-round pruning"
    requires = {"lightgbm": "lightgbm", "optuna_integration": "optuna-integration"}

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        """FLAML's and Optuna's LightGBM ranges, trimmed to trees a few-thousand-row fold can grow."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 2, 128, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.3, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l1": trial.suggest_float("lambda_l1", 1e-3, 10.0, log=True),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }

    def default_params(self, spec: ProblemSpec) -> dict:
        """LightGBM's own defaults (0.1, 31 leaves, 20 rows per leaf, no sampling; L1 / L2 at the ranges' floor)."""
        return {"learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 1.0,
                "bagging_fraction": 1.0, "lambda_l1": 1e-3, "lambda_l2": 1e-3}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The default, pytabkit's tuned default and AutoGluon's large LightGBM (feature sampling, small leaves).

        pytabkit LGBM_TD_CLASS / _REG (pytabkit/models/sklearn/default_params.py, Holzmüller et al. 2024):
        lr 0.04, 50 leaves, 40 rows per leaf, 0.75 of the rows per tree (regression: 0.05, 100, 3, 0.7),
        no L1 / L2 (the ranges' floor). AutoGluon's "GBMLarge" (tabular/configs/zeroshot/
        zeroshot_portfolio_2023.py): lr 0.03, 128 leaves, 0.9 of the features, 3 rows per leaf.
        AutoGluon's learned configurations at lr 0.012-0.015 are left out: they need its 10,000 rounds,
        not the study's few hundred.
        """
        tuned = ({"learning_rate": 0.04, "num_leaves": 50, "min_data_in_leaf": 40, "bagging_fraction": 0.75}
                 if spec.is_classification else
                 {"learning_rate": 0.05, "num_leaves": 100, "min_data_in_leaf": 3, "bagging_fraction": 0.7})
        floor = {"feature_fraction": 1.0, "bagging_fraction": 1.0, "lambda_l1": 1e-3, "lambda_l2": 1e-3}
        return {"default": self.default_params(spec),
                "pytabkit LGBM_TD": {**floor, **tuned},
                "autogluon GBMLarge": {**floor, "learning_rate": 0.03, "num_leaves": 128, "min_data_in_leaf": 3,
                                       "feature_fraction": 0.9}}

    def build(self, params: dict, spec: ProblemSpec) -> LightGBMMember:
        return LightGBMMember(params, spec)


register(LightGBMFamily())


class _StopAtDeadline:
    """A search trial ends at the round that crosses the study's timeout (the best round is kept)."""

    def __init__(self) -> None:
        # after the round is recorded (20) and early stopping has looked (30); set on the instance, where
        # lightgbm.train looks before giving a callback its own order
        self.order = 40

    def __call__(self, env) -> None:
        import lightgbm as lgb

        if past_deadline():
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)
