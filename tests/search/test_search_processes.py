"""`run-all` searches with one process per core (trials side by side, each process on its own cores)
when the search is long enough to repay their start; the portfolio is queued once whoever starts first."""

from __future__ import annotations

import collections
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_study


def test_processes_are_one_per_core_for_a_long_search_and_one_otherwise(monkeypatch):
    from tuner.core import threads
    from tuner.core.errors import TunerError

    monkeypatch.delenv(threads.SEARCH_PROCESSES_ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.search_process_count(300.0, gpu_keras=False) == threads.MAX_SEARCH_PROCESSES
    assert threads.search_process_count(threads.SHARED_SEARCH_FROM_S - 1, gpu_keras=False) == 1
    assert threads.search_process_count(threads.SHARED_SEARCH_FROM_S + 10, gpu_keras=False) == threads.MAX_SEARCH_PROCESSES
    # a Keras study searches in one process for longer: its later stages would import TensorFlow again
    assert threads.search_process_count(threads.SHARED_SEARCH_FROM_S + 10, gpu_keras=False, keras=True) == 1
    assert threads.search_process_count(threads.SHARED_KERAS_SEARCH_FROM_S, gpu_keras=False, keras=True) == threads.MAX_SEARCH_PROCESSES
    assert threads.search_process_count(300.0, gpu_keras=True) == 1  # one process owns the GPU
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.search_process_count(None, gpu_keras=False) == 2
    monkeypatch.setenv(threads.SEARCH_PROCESSES_ENV, "3")
    assert threads.search_process_count(5.0, gpu_keras=True) == 3
    monkeypatch.setenv(threads.SEARCH_PROCESSES_ENV, "two")
    with pytest.raises(TunerError, match="TUNER_SEARCH_PROCESSES='two' is not a whole number"):
        threads.search_process_count(300.0, gpu_keras=False)


def test_each_search_process_keeps_to_its_own_share_of_the_cores():
    import os

    cores = sorted(os.sched_getaffinity(0))
    script = ("import os; from tuner.core.threads import keep_to_share, usable_cores; "
              "print(keep_to_share({index}, {processes}), sorted(os.sched_getaffinity(0)), usable_cores())")
    for index in range(2):
        done = subprocess.run([sys.executable, "-c", script.format(index=index, processes=2)], capture_output=True,
                              text=True, check=True)
        if len(cores) < 2:
            assert done.stdout.split()[0] == "False"
            continue
        share = cores[index::2]
        assert done.stdout.strip() == f"True {share} {len(share)}"


def test_run_all_with_two_search_processes_queues_the_portfolio_once_and_shares_one_parent_run(
        write_study, storage_url, tracking_uri, tmp_path, monkeypatch):
    from tuner.pipeline.run_all import run_all
    from tuner.search.workers import worker_label
    from tuner.study.trial_attrs import PORTFOLIO_ATTR, WORKER_ATTR

    monkeypatch.setenv("TUNER_SEARCH_PROCESSES", "2")
    path = write_study(tiny_study("side-by-side", families=["linear", "xgboost"],
                                  budget={"trials": 4, "rounds": 20, "patience": 2}))
    result = run_all(path, budget=120, storage_url=storage_url, tracking_uri=tracking_uri,
                     ensembles_root=tmp_path / "ensembles")
    trials = optuna.load_study(study_name="side-by-side", storage=storage_url).get_trials()
    counted = [t for t in trials if not t.user_attrs.get("skipped")]
    assert len(counted) == 4 and result.trials == 4
    assert worker_label() not in {t.user_attrs[WORKER_ATTR] for t in counted}  # searched in the started processes
    queued = collections.Counter((t.user_attrs["family"], t.user_attrs[PORTFOLIO_ATTR]) for t in trials
                                 if PORTFOLIO_ATTR in t.user_attrs)
    assert queued and max(queued.values()) == 1  # no configuration queued twice
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("side-by-side").experiment_id])
    assert len([r for r in runs if r.data.tags.get("tuner.role") == "study"]) == 1
    assert result.export is not None and (tmp_path / "ensembles" / "side-by-side" / "MLmodel").is_file()
