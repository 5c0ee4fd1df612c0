"""Time budgets: every family early, cheapest first; no trial started that cannot finish."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState, create_trial

from tuner.search.time_budget import TimeBudget
from tuner.pipeline.study_run import run_study

from conftest import tiny_study


def finished(family: str, seconds: float, state: TrialState = TrialState.COMPLETE):
    return create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                        user_attrs={"family": family, "duration_s": seconds})


def test_the_first_trials_try_every_family_trees_before_networks(write_study, storage_url, tracking_uri):
    path = write_study(tiny_study("each-once", families=["dense", "random_forest", "linear"],
                                  budget={"trials": 3, "epochs": 2, "patience": 1}))
    run_study(path, storage_url, tracking_uri)
    trials = optuna.load_study(study_name="each-once", storage=storage_url).trials
    assert [t.user_attrs["family"] for t in trials] == ["linear", "random_forest", "dense"]


def test_a_family_is_judged_by_the_median_of_its_finished_trials():
    trials = [finished("xgboost", 2.0), finished("xgboost", 30.0, TrialState.PRUNED), finished("xgboost", 4.0),
              finished("dense", 50.0)]
    budget = TimeBudget(time.monotonic() + 10)
    assert budget.expected_seconds(trials, "xgboost") == 4.0
    assert budget.fits(trials, "xgboost") and not budget.fits(trials, "dense")
    assert budget.fits(trials, "linear")  # no record yet: it is tried
    assert not TimeBudget(time.monotonic() + 1).any_fits(trials, ["xgboost", "dense"])
    assert TimeBudget(None).fits(trials, "dense")


def test_no_trial_starts_that_its_family_record_says_cannot_finish(write_study, storage_url, tracking_uri):
    path = write_study(tiny_study("deadline", families=["random_forest"], budget={"trials": 5}))
    run_study(path, storage_url, tracking_uri, trials=1)
    study = optuna.load_study(study_name="deadline", storage=storage_url)
    study.add_trial(finished("random_forest", 600.0))  # the family's record: ten minutes a trial
    study.add_trial(finished("random_forest", 600.0))
    result = run_study(path, storage_url, tracking_uri, trials=5, timeout=60)
    trials = optuna.load_study(study_name="deadline", storage=storage_url).trials
    skipped = [t for t in trials if t.user_attrs.get("skipped")]
    assert len(skipped) == 1 and "would not finish in the" in skipped[0].user_attrs["skipped"]
    assert result.counts.get("COMPLETE") == 3  # nothing new ran; the study stopped instead of waiting


def test_inside_a_trial_the_deadline_stops_keras_and_xgboost_at_the_step_that_crosses_it():
    """A family's first trial has no duration on record: the deadline stops it after one step, and
    a refit outside the search (finalize, ensembles) trains its fixed steps whatever the clock says."""
    import numpy as np

    from tuner.core.deadline import trial_deadline
    from tuner.models import FAMILIES, ProblemSpec

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 4)).astype("float32"), rng.integers(0, 2, 120)
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=4, max_epochs=30, max_rounds=60,
                       patience=50)
    params = {"dense": {"layers": 1, "units": 4, "activation": "relu", "dropout": 0.0, "regularizer": "none",
                        "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32},
              "xgboost": {"learning_rate": 0.1, "max_depth": 2, "min_child_weight": 1.0, "subsample": 1.0,
                          "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 0.0}}
    for name, steps in (("dense", "epochs"), ("xgboost", "rounds")):
        with trial_deadline(time.monotonic()):  # already passed
            member = FAMILIES[name].build(params[name], spec).fit(X[:80], y[:80], X[80:], y[80:])
        assert [len(curve) for curve in member.curves_.values()][0] == 1, f"{name} trained more than one of its {steps}"
        assert member.best_step_ == 1
        unhurried = FAMILIES[name].build(params[name], spec).fit(X[:80], y[:80], X[80:], y[80:])
        assert len(next(iter(unhurried.curves_.values()))) > 1
