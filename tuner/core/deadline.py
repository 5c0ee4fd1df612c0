"""The search's deadline inside a trial: Keras, the boosters and forests stop at the step that crosses it.

Kept apart from `tuner.search.time_budget` so that the model families can read it without importing the
family registry.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_TRIAL_DEADLINE: ContextVar[float | None] = ContextVar("trial_deadline", default=None)


@contextmanager
def trial_deadline(deadline: float | None) -> Iterator[None]:
    """Fits inside this block stop stepping once `deadline` (a `time.monotonic()` value) passes.

    Set by the objective around a search trial's fit only: finalize and ensemble refits train for
    the fixed step count the search found, whatever the clock says.
    """
    token = _TRIAL_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _TRIAL_DEADLINE.reset(token)


def past_deadline() -> bool:
    deadline = _TRIAL_DEADLINE.get()
    return deadline is not None and time.monotonic() >= deadline


def deadline_set() -> bool:
    """Whether a search trial's deadline governs the fits running now (refits have none)."""
    return _TRIAL_DEADLINE.get() is not None
