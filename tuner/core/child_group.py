"""A child command's process group that ends with the tuner process that started it, even when that
process is killed outright (`kill -9`), which no signal handler in it can see.

`python -m tuner.core.child_group PARENT_PID COMMAND...` runs COMMAND (an `mlflow ui` / `mlflow
server`, whose own workers join its process group) and watches PARENT_PID: once that process is
gone, the whole group is stopped, gently first. The watcher leads the group, so `os.killpg` on its
pid reaches every process MLflow started. Kept free of heavy imports: it lives as long as the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
STOP_GRACE_S = 10.0  # how long the group has to stop on SIGTERM before it is killed


def guarded_command(command: list[str]) -> list[str]:
    """`command` run under a watcher of this process: start it with `start_new_session=True`."""
    return [sys.executable, "-m", "tuner.core.child_group", str(os.getpid()), *command]


def stop_group(leader: int, grace_s: float = STOP_GRACE_S, wait=None) -> None:
    """SIGTERM to the group led by `leader`, SIGKILL to what is left after `grace_s` (`wait(timeout)`
    returns when the leader ended, raising `subprocess.TimeoutExpired` when it did not)."""
    _signal_group(leader, signal.SIGTERM)
    if wait is not None:
        try:
            wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(leader, signal.SIGKILL)  # what outlived the grace, workers MLflow started included


def _signal_group(leader: int, signum: int) -> None:
    try:
        os.killpg(leader, signum)
    except ProcessLookupError:  # the group is gone already
        pass


def _watch(parent: int, command: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's stop is for MLflow; the watcher sees it through
    child = subprocess.Popen(command)
    while True:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # tuner ended without stopping the group: it was killed
                _signal_group(os.getpgid(0), signal.SIGTERM)
                try:
                    child.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(os.getpgid(0), signal.SIGKILL)  # this watcher included


if __name__ == "__main__":
    sys.exit(_watch(int(sys.argv[1]), sys.argv[2:]))
