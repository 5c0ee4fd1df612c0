"""Work beside run-all's later stages: done in another process, stopped when the budget ends, failures said."""

import multiprocessing
import os
import time
from types import SimpleNamespace

import psutil
import pytest

from tuner.pipeline.alongside import Alongside
from tuner.pipeline.run_all import RunAllResult, collect_plots
from tuner.pipeline.clock import Clock


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fails() -> None:
    raise ValueError("no trials to draw")


def _children() -> list[psutil.Process]:
    """This process's live children but multiprocessing's resource tracker, which spawning starts once and keeps."""
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != "zombie" and "resource_tracker" not in " ".join(p.cmdline())]


def test_the_work_runs_in_another_process_while_this_one_goes_on():
    before = {p.pid for p in _children()}
    started = time.monotonic()
    work = Alongside(_pid_after, 5.0)
    assert time.monotonic() - started < 4  # not waited for here
    assert work.result(timeout=60) not in {os.getpid(), *before}
    assert {p.pid for p in _children()} <= before  # stopped once collected


def test_work_still_running_when_the_time_is_up_is_stopped_not_waited_for():
    before = {p.pid for p in _children()}
    work = Alongside(_pid_after, 120.0)
    started = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        work.result(timeout=1.0)
    assert time.monotonic() - started < 30
    assert {p.pid for p in _children()} <= before


def _context(work: Alongside, seconds_left: float) -> SimpleNamespace:
    clock = Clock(100.0, time.time() - (100.0 - seconds_left))
    return SimpleNamespace(alongside={"plots": work}, clock=clock, result=RunAllResult(),
                           config=SimpleNamespace(name="churn"), storage_url=None, tracking_uri=None)


def test_plots_that_fail_to_draw_are_said_and_the_run_goes_on():
    ctx = _context(Alongside(_fails), seconds_left=60)
    collect_plots(ctx)
    assert ctx.result.skipped["plots"] == "drawing failed (no trials to draw); `tuner study plots churn` draws them"


def test_plots_still_drawing_at_the_budgets_end_are_let_go():
    ctx = _context(Alongside(_pid_after, 120.0), seconds_left=3.0)
    started = time.monotonic()
    collect_plots(ctx)
    assert time.monotonic() - started < 30
    assert ctx.result.skipped["plots"].startswith("still drawing when the budget ended")
