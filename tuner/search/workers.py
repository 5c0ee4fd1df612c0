"""Who runs a trial: each worker process's label, tags and sampler seed, and its signal handling.

Several processes, on one machine (`--jobs`) or many, search one study. Each is told apart by
its host:pid, which also keeps their samplers from proposing the same sequence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import WORKER_ATTR
from tuner.core.config import StudyConfig
from tuner.search.samplers import make_sampler


def worker_label(pid: int | None = None) -> str:
    """This process's label, or that of its child `pid` (a `--jobs` worker)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def worker_tags(worker: int) -> dict[str, str]:
    """Who ran a trial: the worker (host:pid), its `--jobs` slot and the GPUs it was given."""
    return {"worker": worker_label(), "worker.slot": str(worker),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "all visible")}


def sampler_seed(config: StudyConfig, trials_so_far: int, worker: int, shared: bool = False) -> int:
    """An explicit `sampler.seed` replays the same search in a process alone on its study. A process
    sharing it (`shared`, or a `--jobs` slot after the first), and every process without a seed,
    mixes in its host:pid, so separately started workers never propose the same sequence."""
    seed = config.sampler.seed
    if seed is not None and not shared and worker <= 1:
        return seed + trials_so_far
    base = (config.split.seed if seed is None else seed) + trials_so_far
    return int.from_bytes(hashlib.sha256(f"{base}:{worker_label()}".encode()).digest()[:4], "big")


def other_worker_at_work(trials: list[FrozenTrial], first: int, current: int | None = None) -> bool:
    """Another process searches this study: its trial is RUNNING, or was started since this process
    joined (trial number `first` on). Queued trials belong to no one yet."""
    me = worker_label()
    return any(t.number != current and t.state != TrialState.WAITING and t.user_attrs.get(WORKER_ATTR) != me
               and (t.state == TrialState.RUNNING or t.number >= first) for t in trials)


class ReseedOnJoin:
    """Wraps the objective of a seeded process that started alone: once another worker's trial shows
    up (workers started at the same moment see each other only then), the sampler takes this
    process's own seed before the trial suggests anything."""

    def __init__(self, objective: Callable[..., float], config: StudyConfig, first: int,
                 worker: int) -> None:
        self.objective, self.config, self.first, self.worker = objective, config, first, worker
        self.shared = False

    def __call__(self, trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> float:
        """`trials`: the study's trials as the budget guard read them at this trial's start."""
        trials = trial.study.get_trials(deepcopy=False) if trials is None else trials
        if not self.shared and other_worker_at_work(trials, self.first, trial.number):
            self.shared = True
            trial.study.sampler = make_sampler(self.config.sampler,
                                               sampler_seed(self.config, self.first, self.worker, shared=True))
        return self.objective(trial, trials)


def waiting_line(trials: list[FrozenTrial], grace_s: int) -> str | None:
    """What a worker waiting on other workers' running trials says, so a resume after `kill -9`
    (a dead worker's trial holds the budget until its heartbeat expires) is not taken for a hang."""
    me, host = worker_label(), socket.gethostname()
    lines = []
    for trial in trials:
        label = trial.user_attrs.get(WORKER_ATTR)
        if trial.state != TrialState.RUNNING or label == me:
            continue
        if label is None or label.rpartition(":")[0] == host and not _alive(label.rpartition(":")[2]):
            lines.append(f"waiting up to {grace_s} s for trial {trial.number} of a stopped worker to expire its heartbeat")
        else:
            lines.append(f"waiting for trial {trial.number}, running in worker {label}")
    return "; ".join(lines) or None


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def parent_run_status(study: optuna.Study, status: str) -> str | None:
    """How this worker leaves the study's parent run: `status`, or None (still RUNNING) while other
    workers run trials, so the last worker to finish is the one that closes it."""
    me = worker_label()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return None if any(t.user_attrs.get(WORKER_ATTR) != me for t in running) else status


class _NoTrialTracebacks(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C or SIGTERM, and each failed one, with its traceback;
    the command's own line says it better: the interrupted one is dropped, a failure keeps one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt):
            return False
        if error is not None and type(error).__name__ == "TrialFailed":  # recorded on the trial and its run
            record.exc_info = None
        return True


def quiet_trial_tracebacks() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs a trial's end
    if not any(isinstance(f, _NoTrialTracebacks) for f in logger.filters):
        logger.addFilter(_NoTrialTracebacks())


def interrupt_on_signals() -> None:
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: the current trial is marked, its run closed.

    Only the first signal interrupts, so the clean-up it starts (MLflow calls, the `--jobs`
    parent's SIGTERM to workers already stopping on the terminal's Ctrl-C) is not itself cut short.
    """
    def interrupt(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    quiet_trial_tracebacks()
