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
