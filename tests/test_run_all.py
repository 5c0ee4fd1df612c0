"""`tuner run-all`: search, one test look, ensemble and export in one command; a rerun adds no look."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli, tiny_study


@pytest.mark.slow
def test_run_all_searches_finalizes_blends_and_exports_then_reruns_without_a_new_look(
        write_study, storage_url, tracking_uri, tmp_path):
    path = write_study(tiny_study("everything", families=["linear", "random_forest", "xgboost"],
                                  budget={"trials": 5, "rounds": 30, "patience": 2}))
    common = ["--storage", storage_url, "--tracking-uri", tracking_uri, "--root", str(tmp_path / "ensembles")]
    first = run_cli("run-all", str(path), "--budget", "30", *common)  # a small budget: 3 folds, fewer members
    assert first.returncode == 0, first.stderr
    for printed in ("test_roc_auc", "oof_roc_auc", "exported blend", "alias @champion", "time: search"):
        assert printed in first.stdout
    manifest = json.loads((tmp_path / "ensembles" / "everything" / "manifest.json").read_text())
    study = optuna.load_study(study_name="everything", storage=storage_url)
    looks = study.user_attrs["tuner.test_looks"]
    assert looks == 2  # finalize's and the ensemble's, each counted once
    assert study.user_attrs["tuner.test_lookers"] == ["finalize", "ensemble build everything"]
    client = MlflowClient(tracking_uri)
    [parent] = client.search_runs([client.get_experiment_by_name("everything").experiment_id],
                                  "tags.`tuner.role` = 'study'")
    plots = {a.path: a.file_size for a in client.list_artifacts(parent.info.run_id, "plots")}
    for plot in ("history.png", "validation_vs_test.png", "ensemble-everything-weights.png"):
        assert plots.get(f"plots/{plot}", 0) > 0, plot  # the study's run shows every stage's plots

    again = run_cli("run-all", str(path), *common)
    assert again.returncode == 0, again.stderr
    assert "shown from the earlier run (no new test look): finalize, ensemble, export" in again.stdout
    assert optuna.load_study(study_name="everything", storage=storage_url).user_attrs["tuner.test_looks"] == looks
    assert json.loads((tmp_path / "ensembles" / "everything" / "manifest.json").read_text()) == manifest


def test_the_ensemble_is_sized_from_each_familys_median_trial_time(storage_url):
    from optuna.trial import TrialState, create_trial

    from tuner.pipeline import ensemble_size

    study = optuna.create_study(study_name="sized", storage=storage_url, direction="maximize")
    for family, seconds in [("linear", 1.0), ("linear", 1.0), ("dense", 10.0), ("dense", 12.0)]:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9,
                                     user_attrs={"family": family, "duration_s": seconds}))
    # per fold and refit: 2 x (1 + 11) members + 11 for the wide-and-deep blend = 35 s
    assert ensemble_size("sized", storage_url, None) == (5, 2)
    assert ensemble_size("sized", storage_url, 6 * 35) == (5, 2)
    assert ensemble_size("sized", storage_url, 4 * 35) == (3, 2)
    assert ensemble_size("sized", storage_url, 4 * 23) == (3, 1)
    assert ensemble_size("sized", storage_url, 10) == (2, 1)
