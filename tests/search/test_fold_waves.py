"""Which trials fit their folds side by side, and how long a trial that leads the study may run."""

from __future__ import annotations

import os
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState, create_trial

from tuner.models import FAMILIES
from tuner.search.fold_fits import FoldFitter
from tuner.search.objective import Objective
from tuner.search.time_budget import TimeBudget
from tuner.study.trial_attrs import DURATION_ATTR, FAMILY_ATTR, FOLD_SCORES_ATTR, FOLDS_AT_ONCE_ATTR


def timed(family: str, seconds: float, folds_at_once: int = 1, folds: int = 5) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, value=0.9, user_attrs={
        FAMILY_ATTR: family, DURATION_ATTR: seconds, FOLD_SCORES_ATTR: [0.9] * folds, FOLDS_AT_ONCE_ATTR: folds_at_once})


class WarmFitter(FoldFitter):
    def __init__(self, workers: int, warm: bool) -> None:
        super().__init__(workers)
        if warm:
            self._warm.set()


def folds_at_once(family: str, trials: list, warm: bool = True, loaded: tuple[str, ...] = ()) -> int:
    """`Objective._folds_at_once` on a five-fold study with two workers, without a study around it."""
    objective = SimpleNamespace(cross_validated=True, folds=[None] * 5, fitter=WarmFitter(2, warm))
    objective.fitter.loaded.update(loaded)
    return Objective._folds_at_once(objective, FAMILIES[family], trials)


def test_a_family_fits_its_folds_side_by_side_once_a_fold_is_worth_a_worker():
    assert folds_at_once("xgboost", []) == 2  # no record, workers warm: side by side from the start
    assert folds_at_once("xgboost", [], warm=False) == 1  # workers still starting: this process times it
    assert folds_at_once("linear", [timed("linear", 0.5)]) == 1  # 0.1 s a fold: a worker gains nothing
    assert folds_at_once("random_forest", [timed("random_forest", 4.0)]) == 2
    # a fold's seconds count the folds fitted at once: 5 folds, 2 at a time, 1.0 s is 0.4 s a fold
    assert folds_at_once("random_forest", [timed("random_forest", 1.0, folds_at_once=2)]) == 2
    assert folds_at_once("random_forest", [timed("random_forest", 1.0, folds_at_once=1)]) == 1


def test_a_keras_family_waits_until_a_fold_pays_for_loading_tensorflow_in_the_workers():
    start_s = FAMILIES["dense"].worker_start_s
    assert start_s > 0 and not FAMILIES["xgboost"].worker_start_s
    assert folds_at_once("dense", []) == 1  # not on the warm-up's word alone
    cheap = [timed("dense", 5 * start_s / 4)]  # a fold a quarter of the start-up
    assert folds_at_once("dense", cheap) == 1
    assert folds_at_once("dense", cheap, loaded=("dense",)) == 2  # loaded already: only the fold's cost counts
    assert folds_at_once("dense", [timed("dense", 5 * start_s)]) == 2


def test_the_custom_family_and_a_holdout_study_fit_in_this_process():
    assert folds_at_once("custom", [timed("custom", 50.0)]) == 1
    holdout = SimpleNamespace(cross_validated=False, folds=[None], fitter=WarmFitter(2, True))
    assert Objective._folds_at_once(holdout, FAMILIES["xgboost"], []) == 1


def test_a_trial_that_leads_the_study_may_finish_in_the_budget_s_grace():
    budget = TimeBudget.from_timeout(10, grace_s=6)
    assert budget.deadline_for(leading=True) - budget.deadline_for(leading=False) == 6
    assert TimeBudget.from_timeout(None, grace_s=6).deadline_for(leading=True) is None
    trials = [timed("xgboost", 1.0), create_trial(state=TrialState.COMPLETE, value=0.95),
              create_trial(state=TrialState.PRUNED, value=0.99, intermediate_values={0: 0.99})]
    best = Objective._best_value(trials, sign=1)
    assert best == 0.95  # completed trials only
    assert Objective._leads(0.96, best, sign=1) and not Objective._leads(0.94, best, sign=1)
    assert Objective._best_value(trials, sign=-1) == 0.9 and Objective._leads(0.8, 0.9, sign=-1)
    assert not Objective._leads(0.99, None, sign=1)  # nothing to lead yet



def test_a_seeded_study_keeps_its_out_of_fold_predictions_when_its_folds_run_side_by_side(
        tmp_path, write_study, tracking_uri, monkeypatch):
    import numpy as np

    from tuner.pipeline.study_run import run_study
    from tuner.search import objective
    from tuner.study.trial_bags import TrialBags, artifact_root

    from conftest import tiny_study

    monkeypatch.setattr(objective, "WORKER_FOLD_S", 0.0)  # tiny folds: side by side all the same
    monkeypatch.setattr(FoldFitter, "warm", lambda self: True)  # from the first trial on
    found = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("TUNER_FOLD_WORKERS", workers)
        storage = f"sqlite:///{tmp_path / workers / 'optuna.db'}"
        (tmp_path / workers).mkdir()
        name = f"side-by-side-{workers}"
        run_study(write_study(tiny_study(name, families=["linear", "random_forest", "xgboost"], budget={"trials": 4},
                                         sampler={"name": "tpe", "seed": 5}), f"{name}.yaml"), storage, tracking_uri)
        bags = TrialBags(artifact_root(storage))
        found[workers] = [(t.params, bags.oof(t), t.user_attrs[FOLDS_AT_ONCE_ATTR]) for t in
                          optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.COMPLETE,))]
    assert [at_once for _, _, at_once in found["1"]] == [1] * 4
    assert [at_once for _, _, at_once in found["2"]] == [2] * 4
    for (params, serial, _), (same_params, side_by_side, _) in zip(found["1"], found["2"], strict=True):
        assert params == same_params
        np.testing.assert_allclose(side_by_side, serial, rtol=1e-5, atol=1e-6)


_HELD: list = []  # in a worker: what a library's import keeps in memory


def _pid_after_loading(megabytes: int) -> int:
    import time

    import numpy as np

    _HELD.append(np.ones(megabytes * 2**20, dtype=np.uint8))  # resident, as TensorFlow's import is
    time.sleep(1.1)  # loky looks at a worker's memory after a task, once a second at most
    return os.getpid()


def test_a_fold_worker_that_loaded_a_large_library_is_kept_for_the_next_wave():
    """loky ends a worker whose memory grew by 300 MB since its first task, taking it for a leak;
    TensorFlow's import alone does, and a new worker would import it again for every Keras wave."""
    from joblib import delayed

    from tuner.search.fold_fits import _parallel

    call = _parallel(2)
    started = set(call(delayed(_pid_after_loading)(0) for _ in range(2)))
    loaded = set(call(delayed(_pid_after_loading)(400) for _ in range(2)))
    after = set(call(delayed(_pid_after_loading)(0) for _ in range(2)))
    assert after <= started | loaded, (started, loaded, after)  # no worker was started again


def test_a_fast_exit_after_fold_workers_prints_no_resource_tracker_warning():
    """`run-all` ends with `os._exit` once its work is written; loky's resource tracker then removes
    the workers' semaphores and shared folders itself, and tuner keeps its "leaked" warnings off the
    user's terminal (`tuner._quiet`)."""
    import subprocess
    import sys

    from conftest import REPO

    script = ("import os, numpy as np; from joblib import delayed; from tuner.search.fold_fits import _parallel\n"
              "print(_parallel(2)(delayed(np.sum)(np.ones(400_000)) for _ in range(4)), flush=True)\n"
              "os._exit(0)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": ""}  # as a user's shell starts tuner
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "400000.0" in run.stdout, run.stderr
    assert "leaked" not in run.stderr, run.stderr
