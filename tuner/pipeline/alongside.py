"""Work run-all does on the idle core beside its later stages: one function in a spawned process.

After the search, the ensemble, the test look and the export keep about one core of two busy; a
stage whose work only reads (drawing the study's plots) runs beside them and is collected at the
end. The process is stopped, not waited for, when the budget ends first or run-all stops early.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable


class Alongside:
    """`function(*args)` in its own spawned process (a clean interpreter: no forked threads or locks)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(1)
        self._pending = self._pool.apply_async(function, args)

    def result(self, timeout: float) -> Any:
        """The function's result or its exception; `multiprocessing.TimeoutError` when it is still
        running after `timeout` seconds. The process is stopped either way."""
        try:
            return self._pending.get(timeout=max(timeout, 0.0))
        finally:
            self.stop()

    def stop(self) -> None:
        self._pool.terminate()
