"""The storage tuner opens: a queued trial is claimed by exactly one of several workers."""

import multiprocessing
import time

import optuna

from tuner.study.storage import open_storage

QUEUED = 120
WORKERS = 4


def _claim_all(url: str, start_at: float, claimed: multiprocessing.Queue) -> None:
    study = optuna.load_study(study_name="race", storage=open_storage(url))
    mine = []
    while time.time() < start_at:  # every worker starts claiming at the same moment
        pass
    while (trial_id := study._pop_waiting_trial_id()) is not None:  # what Study.ask does for a queued trial
        mine.append(trial_id)
    claimed.put(mine)


def test_workers_racing_for_queued_trials_each_claim_different_ones(tmp_path):
    """Fails with Optuna's own RDBStorage on SQLite: about one claim in six went to two workers."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for x in range(QUEUED):
        study.enqueue_trial({"x": x})
    context = multiprocessing.get_context("spawn")
    claimed = context.Queue()
    start_at = time.time() + 3  # after the workers' imports
    workers = [context.Process(target=_claim_all, args=(url, start_at, claimed)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    claims = [trial_id for _ in workers for trial_id in claimed.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=10)
    assert sorted(claims) == sorted(t._trial_id for t in study.get_trials(deepcopy=False))
    assert {t.state for t in study.get_trials(deepcopy=False)} == {optuna.trial.TrialState.RUNNING}
