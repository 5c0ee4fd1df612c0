"""Time budgets: every family early, cheapest first; no trial started that cannot finish."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState, create_trial

from tuner.budget import TimeBudget
from tuner.study import run_study

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
