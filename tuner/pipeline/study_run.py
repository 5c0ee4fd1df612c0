"""`run_study` as the commands run it: the runner (tuner.search.runner) with the dashboard subscribed.

A finished `study run` leaves the study's plots and the best trial's tag on its MLflow parent
run; the runner itself knows nothing of plots, it only tells its subscribers that the run ended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tuner.search import runner
from tuner.reporting.dashboard import refresh_when_finished
from tuner.search.runner import Progress, RunResult


def run_study(study_file: str | Path, storage_url: str | None = None, tracking_uri: str | None = None,
              trials: int | None = None, timeout: float | None = None, jobs: int = 1,
              on_progress: Callable[[Progress], None] | None = None, **options) -> RunResult:
    """Launch or resume a study until it holds `trials` trials (the budget is the study's total);
    `options` are the runner's (`deadline`, `inputs`)."""
    return runner.run_study(study_file, storage_url, tracking_uri, trials, timeout, jobs, on_progress,
                            subscribers=[refresh_when_finished], **options)
