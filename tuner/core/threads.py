"""How many threads one fit may use: every core when it runs alone, its share when folds run side by side.

Kept in `core` so that the model families read it without importing the search.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_FIT_THREADS: ContextVar[int | None] = ContextVar("fit_threads", default=None)


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container or `taskset` narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def fold_worker_count(jobs: int = 1) -> int:
    """How many folds of a trial a search process fits at once: `TUNER_FOLD_WORKERS` (1: one after
    another), else its share of the cores when `jobs` search processes share the machine."""
    setting = os.environ.get("TUNER_FOLD_WORKERS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            from tuner.core.errors import TunerError

            raise TunerError(f"TUNER_FOLD_WORKERS={setting!r} is not a whole number of workers; set it to 1 or more, "
                             "or unset it to use every core")
        return int(setting)
    return max(1, usable_cores() // jobs)


SEARCH_PROCESSES_ENV = "TUNER_SEARCH_PROCESSES"
MAX_SEARCH_PROCESSES = 4  # beyond this, a machine's cores go to each process's fold workers and threads
SHARED_SEARCH_FROM_S = 30.0  # under it the processes' start (imports, data, folds, 3-5 s of a core) is too large a share of the search
SHARED_KERAS_SEARCH_FROM_S = 90.0  # a Keras study's later stages then import TensorFlow anew (8 s more measured at --budget 60)


def search_process_count(search_s: float | None, gpu_keras: bool, keras: bool = False) -> int:
    """How many processes `run-all` searches with, trials side by side: `TUNER_SEARCH_PROCESSES`,
    else one per core up to `MAX_SEARCH_PROCESSES` when the search is long enough to repay their
    start (longer for a study with a `keras` family: searching in one process, run-all has loaded
    TensorFlow for the later stages' Keras bags when the search ends); one when a Keras family may
    train on a GPU (one process owns it)."""
    setting = os.environ.get(SEARCH_PROCESSES_ENV, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            from tuner.core.errors import TunerError

            raise TunerError(f"{SEARCH_PROCESSES_ENV}={setting!r} is not a whole number of processes; set it to 1 or "
                             "more, or unset it to use one per core")
        return int(setting)
    shared_from = SHARED_KERAS_SEARCH_FROM_S if keras else SHARED_SEARCH_FROM_S
    if gpu_keras or (search_s is not None and search_s < shared_from):
        return 1
    return min(usable_cores(), MAX_SEARCH_PROCESSES)


def keep_to_share(index: int, processes: int) -> bool:
    """Pin search process `index` of `processes` to its own share of this machine's cores, so that
    its fits' threads (`fit_threads`, fold workers) count that share and none competes for another's;
    False where it could not (not Linux, or fewer cores than processes)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: the processes share every core
        return False
    if not len(cores) >= processes > 1:
        return False
    os.sched_setaffinity(0, cores[index % processes::processes])
    return True


def fit_threads() -> int:
    """Threads a fit started now may use (`n_jobs` of forests and boosters)."""
    return _FIT_THREADS.get() or usable_cores()


@contextmanager
def threads_limited(threads: int) -> Iterator[None]:
    """Fits inside this block use `threads` threads: the families' `n_jobs`, and OpenMP and BLAS
    (HistGradientBoosting, numpy) through threadpoolctl."""
    from threadpoolctl import threadpool_limits

    token = _FIT_THREADS.set(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        _FIT_THREADS.reset(token)
