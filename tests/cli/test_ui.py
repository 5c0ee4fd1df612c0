"""`tuner ui` and `tuner server` hand MLflow the store through the environment, print it without its
password, and take their MLflow child (and its workers) down with them when stopped by a signal, or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from conftest import REPO
from tests.search.test_scale_out import free_port, pg_url  # noqa: F401  (a fresh PostgreSQL database)

PLANTED = "Pl4ntedSecret"


@pytest.mark.slow
@pytest.mark.parametrize("command, stop", [("ui", signal.SIGTERM), ("server", signal.SIGINT), ("server", signal.SIGKILL)])
def test_the_mlflow_child_never_shows_the_password_and_stops_with_tuner(tmp_path, pg_url, command, stop):  # noqa: F811
    store = pg_url.replace("postgres@", f"postgres:{PLANTED}@")  # trust auth: any password is accepted
    port = free_port()
    arguments = ["--port", str(port)] + (["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
                                         if command == "server" else [])
    # the password only in the environment: `tuner ui` reads the store as every command does, `tuner server` as MLflow's
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_TRACKING_URI": store, "MLFLOW_BACKEND_STORE_URI": store}
    tuner = subprocess.Popen([sys.executable, "-m", "tuner", command, *arguments], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert tuner.poll() is None and time.monotonic() < deadline, "MLflow did not come up"
                time.sleep(1)
        family = [psutil.Process(tuner.pid), *psutil.Process(tuner.pid).children(recursive=True)]
        assert len(family) > 1
        assert not [p.pid for p in family if PLANTED in " ".join(p.cmdline())]
        tuner.send_signal(stop)  # SIGKILL: no handler runs; the group's watcher sees tuner gone
        out, _ = tuner.communicate(timeout=60)
    finally:
        if tuner.poll() is None:
            tuner.kill()
    gone, alive = psutil.wait_procs(family[1:], timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert PLANTED not in out and "postgres:***@" in out
    assert tuner.returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 130 if stop == signal.SIGINT else 128 + stop)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
