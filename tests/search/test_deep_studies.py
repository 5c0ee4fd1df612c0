"""Deep families through the whole study runner, next to a tree family; slow (real training)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tuner.search.runner import run_study  # the search alone: these tests never look at the plots


def run(tmp_path, study: dict, trials: int):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_study(path, storage, f"sqlite:///{tmp_path / 'mlflow.db'}", trials=trials)
    return result, optuna.load_study(study_name=study["name"], storage=storage)


@pytest.mark.slow
def test_mixed_table_study_runs_wide_deep_multi_input_and_trees_together(tmp_path):
    families = {name: {"max_trials": 1} for name in ("wide_deep", "multi_input", "xgboost")}
    result, study = run(tmp_path, {"name": "mixed", "data": {"source": "builtin:generated_mixed"},
                                   "split": {"folds": 2, "seed": 0},  # bagged like the default, 2 fits per trial not 5
                                   "families": families, "budget": {"epochs": 2, "patience": 2, "batch_size": 64}}, 3)
    assert result.counts == {"COMPLETE": 3}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs["family"] for t in complete} == set(families)
    keras_trials = [t for t in complete if t.user_attrs["family"] != "xgboost"]
    assert all(t.user_attrs["params"]["batch_size"] == 64 for t in keras_trials)  # fixed by the study
    assert all(not any(name.endswith(".batch_size") for name in t.params) for t in keras_trials)


@pytest.mark.slow
def test_custom_monitor_study_records_the_monitored_loss_as_its_value(tmp_path):
    study = {"name": "vae", "data": {"source": "builtin:digits"}, "direction": "minimize",
             "split": {"validation_fraction": 0.2},
             "families": {"custom": {"builder": "tuner.examples.vae:build_vae", "monitor": "val_loss"}},
             "budget": {"epochs": 2, "patience": 2, "batch_size": 128}}
    result, stored = run(tmp_path, study, 2)
    assert result.metric == "loss" and result.direction == "minimize"
    assert result.counts == {"COMPLETE": 2}
    best = stored.best_trial
    assert best.value == pytest.approx(min(best.intermediate_values.values()))
