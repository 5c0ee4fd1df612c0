"""A worker waiting on another worker's trial says so: a resume after `kill -9` is not a silent hang."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import optuna


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_resume_waiting_for_a_dead_workers_heartbeat_says_how_long(tmp_path, monkeypatch, caplog):
    from tuner.search.runner import _search
    from tuner.study.storage import open_storage

    monkeypatch.setenv("TUNER_HEARTBEAT_S", "1")
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="resumed", storage=storage)
    lost = study.ask()  # the trial a killed worker left RUNNING, its last heartbeat just now
    lost.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    storage.record_heartbeat(lost._trial_id)
    with caplog.at_level(logging.WARNING, logger="tuner"):
        _search(study, lambda trial, trials: 1.0, budget=1, timeout=60, on_progress=None)
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting == ["waiting up to 4 s for trial 0 of a stopped worker to expire its heartbeat"]
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and [t.state.name for t in trials[1:]] == ["COMPLETE"]


def test_a_live_workers_trial_is_named_as_running_not_stopped(monkeypatch):
    from optuna.trial import TrialState, create_trial

    from tuner.search.workers import waiting_line

    running = create_trial(state=TrialState.RUNNING, user_attrs={"worker": "other-host:42"})
    assert waiting_line([running], 8) == f"waiting for trial {running.number}, running in worker other-host:42"


def test_an_interrupted_trial_leaves_no_traceback_and_a_failed_one_no_traceback(caplog):
    """Optuna's own log of the trial stopped by Ctrl-C is dropped (the command says it cleanly)."""
    import pytest

    from tuner.search.objective import TrialFailed
    from tuner.search.workers import quiet_trial_tracebacks

    quiet_trial_tracebacks()
    study = optuna.create_study()

    def broken(trial):
        raise TrialFailed("ValueError: no")

    with caplog.at_level(logging.WARNING, logger="optuna"):
        study.optimize(broken, n_trials=1, catch=(TrialFailed,))
    assert any("failed" in r.getMessage() for r in caplog.records) and not any(r.exc_info for r in caplog.records)
    caplog.clear()

    def stopped(trial):
        raise KeyboardInterrupt("signal 15")

    with caplog.at_level(logging.WARNING, logger="optuna"), pytest.raises(KeyboardInterrupt):
        study.optimize(stopped, n_trials=1)
    assert not [r for r in caplog.records if "signal 15" in r.getMessage() or r.exc_info]


def test_this_run_counts_only_its_own_trials_when_another_worker_shares_the_study(write_study, storage_url, tracking_uri):
    """Another worker's trial finishing during this run adds to the study's counts, not to `ran`."""
    from optuna.trial import TrialState, create_trial

    from conftest import tiny_study
    from tuner.pipeline.study_run import run_study

    path = write_study(tiny_study("shared", families=["linear"], budget={"trials": 4}))
    joined = []

    def other_worker(progress) -> None:  # after this process's first trial, another worker's lands
        if not joined:
            study = optuna.load_study(study_name="shared", storage=storage_url)
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5,
                                         user_attrs={"worker": "elsewhere:1", "family": "linear"}))
            joined.append(True)

    result = run_study(path, storage_url, tracking_uri, on_progress=other_worker)
    assert sum(result.counts.values()) == 4 and result.trials_before == 0
    assert result.ran == 3  # the study's total is 4; this process ran 3 of them
    again = run_study(path, storage_url, tracking_uri, trials=5)
    assert again.ran == 1 and again.trials_before == 4
