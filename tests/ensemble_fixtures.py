"""Small fitted members and ensembles for tests of blends and export (no study needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import optuna

from tuner.data import load_dataset, prepare_parts
from tuner.ensemble import FittedEnsemble, FittedMember, WeightedAverage
from tuner.models import FAMILIES, ProblemSpec

XGB = {"learning_rate": 0.3, "max_depth": 3, "min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0,
       "reg_lambda": 1.0, "reg_alpha": 0.01}
WIDE_DEEP_MEMBER = {"cross_columns": 2, "hash_bins": 64, "layers": 1, "units": 8, "dropout": 0.0, "category_dim": 2,
                    "optimizer": "adam", "learning_rate": 0.01, "batch_size": 32}


def fitted_members(task: str, metric: str, dataset):
    fit, parts, preprocessor, encoder = prepare_parts(dataset, task, np.arange(0, len(dataset.y) - 40),
                                                      {"rest": np.arange(len(dataset.y) - 40, len(dataset.y))})
    n_classes = len(encoder.classes_) if encoder is not None else 0
    spec = ProblemSpec(task=task, metric=metric, n_classes=n_classes, n_features=fit.X("tabular").shape[1],
                       max_epochs=2, max_rounds=5, **preprocessor.input_shapes())
    chosen = {
        "linear": {"C": 1.0} if task != "regression" else {"alpha": 1.0},
        "xgboost": {"learning_rate": 0.3, "max_depth": 3, "min_child_weight": 1.0, "subsample": 1.0,
                    "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 0.01},
        "dense": {"units": 8, "layers": 1, "dropout": 0.0, "l2": 0.0, "optimizer": "adam",
                  "learning_rate": 0.01, "batch_size": 32},
    }
    members = []
    for trial, (family, params) in enumerate(chosen.items()):
        params = FAMILIES[family].search_space(FixedAnswers(params), spec) if family == "dense" else params
        member = FAMILIES[family].build(params, spec).fit(fit.X("tabular"), fit.y)
        members.append(FittedMember("s", trial, family, params, None, "tabular", member))
    return members, preprocessor, encoder, parts["rest"]


class FixedAnswers:
    """Answers a family's suggestions from a dict, falling back to the first choice / the low end."""

    def __init__(self, params):
        self.params = params

    def suggest_int(self, name, low, high, **kw):
        return self.params.get(name, low)

    def suggest_float(self, name, low, high, **kw):
        return self.params.get(name, low)

    def suggest_categorical(self, name, choices):
        return self.params.get(name, choices[0])



def tiny_ensemble(source: str = "builtin:breast_cancer", task: str = "binary", metric: str = "roc_auc"):
    """A weighted linear + XGBoost + dense blend refitted on all but 40 rows; returns it and those rows."""
    dataset = load_dataset(source)
    members, preprocessor, encoder, rest = fitted_members(task, metric, dataset)
    ensemble = FittedEnsemble("weighted", task, metric, None if encoder is None else list(encoder.classes_),
                              preprocessor, members, WeightedAverage(np.array([0.2, 0.5, 0.3])),
                              dataset.fingerprint, "digest", example=rest.raw[:5])
    return ensemble, rest


def stand_in_source(task: str, metric: str):
    """Just what blends ask of a sealed study: its name, budget and problem spec."""
    def problem_spec(n_classes, n_features, image_shape=None, **inputs):
        return ProblemSpec(task=task, metric=metric, n_classes=n_classes, n_features=n_features,
                           image_shape=image_shape, max_epochs=2, max_rounds=5, **inputs)

    return SimpleNamespace(config=SimpleNamespace(name="s", budget=SimpleNamespace(epochs=2)), problem_spec=problem_spec)


def xgboost_candidate(source):
    from tuner.ensemble.candidates import Candidate

    trial = optuna.trial.create_trial(value=0.9, params={}, distributions={},
                                      user_attrs={"family": "xgboost", "params": XGB, "best_step": 5})
    return Candidate(source, trial)


def learned_blends(source: str = "builtin:generated_mixed", task: str = "binary", metric: str = "roc_auc"):
    """A stacked blend of `tiny_ensemble`'s members and a wide-and-deep blend (XGBoost leaves; a
    `wide_deep` member's architecture as the deep part), refitted on all but 40 rows."""
    from tuner.ensemble.blends import DeepPlan, fit_stacked, fit_wide_deep

    dataset = load_dataset(source)
    members, preprocessor, encoder, rest = fitted_members(task, metric, dataset)
    fit, _, _, _ = prepare_parts(dataset, task, np.arange(0, len(dataset.y) - 40), {})
    classes = None if encoder is None else list(encoder.classes_)
    scores = [m.member.predict_scores(fit.X(m.view)) for m in members]
    stacked = FittedEnsemble("stacked", task, metric, classes, preprocessor, members, fit_stacked(scores, fit.y, task),
                             dataset.fingerprint, "digest", example=rest.raw[:5])
    src = stand_in_source(task, metric)
    wide = fit_wide_deep(xgboost_candidate(src), DeepPlan(src, "wide_deep", WIDE_DEEP_MEMBER, 2, "s#3 wide_deep"),
                         fit, encoder)
    wide_deep = FittedEnsemble("wide_deep", task, metric, classes, preprocessor, wide.members, wide.combiner,
                               dataset.fingerprint, "digest", example=rest.raw[:5])
    return stacked, wide_deep, rest
