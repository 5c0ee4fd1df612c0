"""A bag's folds fitted side by side, one joblib worker per core, so both cores work on a small table.

A forest or a boosted model on a few thousand rows cannot fill two cores by itself, and the book's
small networks even less, so the folds of one trial run at once, in waves of one fold per worker,
each fold on its share of the threads (`tuner.core.threads`). joblib's default backend (loky
processes) keeps TensorFlow's seeds and session per process; a user with a Dask or Ray cluster
picks it with `joblib.parallel_config(backend=...)`. Every fold is seeded as it is when fitted
alone, so its predictions do not depend on the worker that fitted it.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.core.deadline import trial_deadline
from tuner.core.threads import threads_limited, usable_cores
from tuner.models import Family, Member, ProblemSpec


@dataclass
class FoldFit:
    """What one fold's fit gives back: the member, its validation predictions (and its own score
    when it has one), its learning curves; or the error it raised."""

    member: Member | None = None
    predicted: np.ndarray | None = None
    own_score: float | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    error: BaseException | None = None
    error_trace: str = ""


def fit_fold(family: Family, params: dict[str, Any], spec: ProblemSpec, number: int, data: tuple,
             deadline: float | None, threads: int, predict: bool, trial: Any = None,
             curves: dict[str, list[float]] | None = None) -> FoldFit:
    """Seed, build and fit one fold's member and predict its validation rows (always with `predict`,
    else only when the member has no score of its own); where it runs does not change what it
    returns. A fit that raises comes back as `error`, so a worker's failure never restarts the pool;
    Ctrl-C and `optuna.TrialPruned` (from `trial`) still raise, with `curves` filled so far."""
    import optuna

    X, y, X_val, y_val = data
    result = FoldFit(curves={} if curves is None else curves)
    try:
        with threads_limited(threads), trial_deadline(deadline):
            member = family.fit_member(params, spec, number, X, y, X_val, y_val, trial=trial, curves=result.curves)
        result.member = member
        result.own_score = getattr(member, "validation_score_", None)  # a custom model scored by its monitor
        if predict or result.own_score is None:
            result.predicted = member.predict_scores(X_val)
    except optuna.TrialPruned:
        raise
    except Exception as exc:  # noqa: BLE001 - handed back to the trial, which records it as FAILED
        result.error, result.error_trace = _portable(exc), traceback.format_exc()
    return result


def _in_worker(family: Family, params: dict[str, Any], spec: ProblemSpec, number: int, data: tuple,
               deadline: float | None, threads: int, predict: bool) -> FoldFit:
    """A fold fitted in a worker process, on its share of the threads; what an earlier fold left in
    the library's state is freed first."""
    family.limit_process_threads(threads)
    family.release_memory()
    return fit_fold(family, params, spec, number, data, deadline, threads, predict)


def _warm(families: list[Family], threads: int) -> None:
    """A worker's first task: its libraries loaded before the first fold arrives."""
    for family in families:
        if family.fits_in_workers() and not family.worker_start_s:
            family.limit_process_threads(threads)
            family.release_memory()
    time.sleep(0.5)  # long enough that each worker gets one of these


def _parallel(workers: int) -> Any:
    """joblib's pool of `workers`: the backend the user chose with `joblib.parallel_config`, else loky
    processes that end with the study's process."""
    from joblib import Parallel
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    if type(backend).__name__ == "LokyBackend":  # joblib's default, or chosen by name
        return Parallel(n_jobs=workers, backend="loky", initializer=_start_worker, initargs=(os.getpid(),))
    return Parallel(n_jobs=workers)


LOADED_LIBRARIES_BYTES = 4 * 2**30  # TensorFlow and the boosters, loaded by a worker's first fold of them


def _start_worker(parent: int) -> None:
    """A loky worker keeps the libraries its folds load (loky restarts a worker whose memory grew by
    300 MB since its first task, which TensorFlow's import alone does, so every Keras wave would import
    it again), and ends with its study's process."""
    from joblib.externals.loky import process_executor

    process_executor._MAX_MEMORY_LEAK_SIZE = LOADED_LIBRARIES_BYTES
    _end_with_parent(parent)


def _end_with_parent(parent: int) -> None:
    """A worker whose study process `parent` was killed (`kill -9`), even before this worker started,
    ends too, instead of fitting for nobody while holding the terminal's pipes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _portable(exc: Exception) -> Exception:
    """The exception itself when it survives a trip between processes; else a RuntimeError that keeps
    its type name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class FoldFitter:
    """Fits folds in waves of `workers` at once (one when a fold needs the trial itself, as a
    holdout study's per-epoch pruning does, or the family's fits must stay in this process). A fit
    has its share of the threads: small fits scale poorly across threads and badly on a core another
    process is using."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._parallel = None
        self._warm = threading.Event()
        self._warm_up_started = False
        self.loaded: set[str] = set()  # families whose folds the workers have fitted (their library is loaded)

    def warm_up(self, families: list[Family]) -> None:
        """Start the workers and import the families' libraries in them (not those slow to load, which
        wait for a fold worth it), in the background, while this process fits the first trials itself."""
        if self.workers < 2 or not any(f.fits_in_workers() for f in families):
            return
        from joblib import delayed

        threads = self._threads(self.workers)
        call = _parallel(self.workers)

        def warm() -> None:
            call(delayed(_warm)(families, threads) for _ in range(self.workers))
            self._warm.set()

        self._warm_up_started = True
        threading.Thread(target=warm, name="fold-workers-warm-up", daemon=True).start()

    def _warming(self) -> bool:
        return self._warm_up_started and not self._warm.is_set()

    def warm(self) -> bool:
        """Whether the workers have started and loaded the families' libraries."""
        return self._warm.is_set()

    def wave_size(self, family: Family, folds: int) -> int:
        return min(self.workers, folds) if family.fits_in_workers() else 1

    def fit(self, family: Family, params: dict[str, Any], specs: list[ProblemSpec], number: int,
            data: list[tuple], deadline: float | None, predict: bool, trial: Any = None,
            curves: dict[str, list[float]] | None = None) -> list[FoldFit]:
        """One wave: each fold's spec and (X, y, X_val, y_val); in this process when it is one fold,
        which then fills `curves` as it trains."""
        if len(data) == 1:  # every core, or this process's share while the workers warm up
            threads = self._threads(self.workers if self._warming() else 1)
            return [fit_fold(family, params, specs[0], number, data[0], deadline, threads, predict, trial, curves)]
        from joblib import delayed

        if self._parallel is None:
            self._parallel = _parallel(self.workers)
        threads = self._threads(len(data))
        self.loaded.add(family.name)
        return list(self._parallel(delayed(_in_worker)(family, params, spec, number, part, deadline, threads, predict)
                                   for spec, part in zip(specs, data)))

    def _threads(self, running: int) -> int:
        """A fold's share of the cores when `running` fits run at once."""
        return max(1, usable_cores() // running)
