"""Gradient boosted trees with CatBoost: symmetric trees, ordered target statistics for categoricals,
early stopping on the study's metric, per-round pruning.

It reads the `native_all_levels` view: missing numbers left as NaN (CatBoost sends them below every
split), each categorical column as one code per level training saw, which CatBoost encodes itself
with ordered target statistics (`cat_features`; a missing or unseen code is one more level). Unlike
XGBoost and LightGBM it gains from a column's rare levels instead of overfitting on them. A fitted
member is CatBoost's own `.cbm` file, read back without TensorFlow or a pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuner.core.deadline import past_deadline
from tuner.core.threads import fit_threads
from tuner.models.base import BoosterMember, Family, ProblemSpec
from tuner.models.registry import register

# study metric -> CatBoost's per-round name; log loss is "Logloss" (binary) or "MultiClass"
_ROUND_METRICS = {"roc_auc": "AUC", "accuracy": "Accuracy", "rmse": "RMSE", "mae": "MAE", "r2": "R2"}
MISSING_LEVEL = -1  # the code CatBoost sees where the native view has NaN (missing or unseen)


def round_metric(spec: ProblemSpec) -> str:
    """The per-round twin of the study metric, as CatBoost names it in its evaluation log."""
    if spec.metric == "log_loss":
        return "MultiClass" if spec.task == "multiclass" else "Logloss"
    return _ROUND_METRICS[spec.metric]


class CatBoostMember(BoosterMember):
    picklable = False  # a bag writes each fold model as CatBoost's .cbm file, never a pickle

    def _pool(self, X: np.ndarray, y: np.ndarray | None = None):
        """The rows as CatBoost takes categoricals: whole-number codes (it refuses floats and NaN)."""
        import pandas as pd
        from catboost import Pool

        categorical = list(self.spec.native_categorical)
        frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        for column in frame.columns[categorical]:
            frame[column] = frame[column].fillna(MISSING_LEVEL).astype(np.int64)
        return Pool(frame, y, cat_features=categorical or None)

    def _model(self, rounds: int, with_validation: bool):
        import catboost

        spec = self.spec
        common = dict(self.params, iterations=rounds, random_seed=spec.seed, thread_count=fit_threads(),
                      allow_writing_files=False, logging_level="Silent")
        if with_validation:
            common.update(eval_metric=round_metric(spec), early_stopping_rounds=spec.patience * 5, use_best_model=True)
        if spec.is_classification:
            loss = "MultiClass" if spec.task == "multiclass" else "Logloss"
            return catboost.CatBoostClassifier(**common, loss_function=loss, class_names=list(range(spec.n_classes)))
        return catboost.CatBoostRegressor(**common, loss_function="RMSE")

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> CatBoostMember:
        if X_val is None:
            self.model_ = self._model(self.spec.max_rounds, with_validation=False).fit(self._pool(X, y))
            self.best_step_ = self.spec.max_rounds
            return self
        metric = round_metric(self.spec)
        callbacks: list = [_StopAtDeadline()]
        pruning = None
        if trial is not None:
            from optuna_integration.catboost import CatBoostPruningCallback

            pruning = CatBoostPruningCallback(trial, metric)
            callbacks.append(pruning)
        self.model_ = self._model(self.spec.max_rounds, with_validation=True)
        self.model_.fit(self._pool(X, y), eval_set=self._pool(X_val, y_val), callbacks=callbacks)
        self.curves_ = {f"val_{metric}": [float(v) for v in self.model_.get_evals_result()["validation"][metric]]}
        if pruning is not None:
            pruning.check_pruned()  # CatBoost stops at the callback's word; the trial is pruned here
        self.best_step_ = int(self.model_.get_best_iteration()) + 1
        return self

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        pool = self._pool(X)
        return self.model_.predict_proba(pool) if self.spec.is_classification else self.model_.predict(pool)

    def save(self, path: str | Path) -> Path:
        """CatBoost's own `.cbm` model (the rounds up to the best), the params and spec beside it."""
        path = Path(path).with_suffix(".cbm")
        self.model_.save_model(str(path), format="cbm")
        self.write_state(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CatBoostMember:
        import catboost

        path = Path(path).with_suffix(".cbm")
        member = cls.from_state(path)
        model_class = catboost.CatBoostClassifier if member.spec.is_classification else catboost.CatBoostRegressor
        member.model_ = model_class().load_model(str(path), format="cbm")
        return member


class CatBoostFamily(Family):
    name = "catboost"
    portfolio_rank = 60
    picked = True
    view = "native_all_levels"
    description = "CatBoost gradient boosted trees (symmetric, native categoricals and missing values), per-round pruning"
    requires = {"catboost": "catboost", "optuna_integration": "optuna-integration"}

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        """The ranges of CatBoost's tuning guide and the TabArena / Optuna examples."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "depth": trial.suggest_int("depth", 4, 10),
            "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 10.0, log=True),
            "random_strength": trial.suggest_float("random_strength", 0.1, 10.0, log=True),
        }

    def default_params(self, spec: ProblemSpec) -> dict:
        """CatBoost's own defaults (depth 6, L2 3, random strength 1). Its learning rate is chosen from
        the rows and rounds, which a spec does not know: 0.05, what it picks for a few thousand rows
        with 500 rounds and a validation set (and AutoGluon's CatBoost default)."""
        return {"learning_rate": 0.05, "depth": 6, "l2_leaf_reg": 3.0, "random_strength": 1.0}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The default, AutoGluon's first learned CatBoost and pytabkit's tuned default.

        AutoGluon r177 (tabular/configs/zeroshot/zeroshot_portfolio_2023.py, learned with TabRepo; the first
        CatBoost it fits after the default): depth 6, l2_leaf_reg 2.154, lr 0.0686 (its max_ctr_complexity 4
        and one_hot_max_size 10 are outside this space; random strength stays CatBoost's 1).
        pytabkit CatBoost_TD_CLASS / _REG (pytabkit/models/sklearn/default_params.py): lr 0.08, depth 7,
        random strength 0.8 (regression: 0.09, depth 9, 0.0); its l2_leaf_reg 1e-5 and a random strength
        of 0 sit at this space's floor (1 and 0.1), its Bernoulli row sampling is left out.
        """
        tuned = ({"learning_rate": 0.08, "depth": 7, "l2_leaf_reg": 1.0, "random_strength": 0.8}
                 if spec.is_classification else
                 {"learning_rate": 0.09, "depth": 9, "l2_leaf_reg": 1.0, "random_strength": 0.1})
        return {"default": self.default_params(spec),
                "autogluon r177": {"learning_rate": 0.0686, "depth": 6, "l2_leaf_reg": 2.154, "random_strength": 1.0},
                "pytabkit CatBoost_TD": tuned}

    def build(self, params: dict, spec: ProblemSpec) -> CatBoostMember:
        return CatBoostMember(params, spec)


register(CatBoostFamily())


class _StopAtDeadline:
    """A search trial ends at the round that crosses the study's timeout (the best round is kept)."""

    def after_iteration(self, info) -> bool:
        return not past_deadline()
