"""`tuner ui` and `tuner server`: start MLflow's UI on the project's store, or a tracking server for many machines.

The store URI reaches the MLflow child through its environment (it may hold a password, and a
command line is visible to every user through `ps`) and is printed with its password hidden. The
child runs in its own process group, which tuner stops when it is stopped itself (Ctrl-C,
SIGTERM, SIGHUP), and which a watcher stops when tuner is killed (`kill -9`), so no MLflow server
is left holding the port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from tuner.cli.shared import StorageOption, TrackingOption, console
from tuner.core.secrets import redact_url


def ui(tracking_uri: Optional[str] = TrackingOption, storage: Optional[str] = StorageOption,
       host: str = typer.Option("127.0.0.1", help="bind address (keep 127.0.0.1 unless you mean to share it)"),
       port: int = typer.Option(5000, help="port")) -> None:
    """Start the MLflow UI on the project's store."""
    from tuner.tracking import artifact_root_for, child_environment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port),
               "--workers", "1"]  # one local reader; MLflow's default 4 workers cost memory and start-up time
    if artifact_root_for(uri):
        command += ["--default-artifact-root", artifact_root_for(uri)]
    console.print(f"MLflow UI on http://{host}:{port} (store {redact_url(uri)}); Ctrl-C stops it")
    console.print(f"a study's runs: http://{host}:{port}/#/experiments/ID/runs?workflowType=machine_learning "
                  "(or pick 'Model training' in the sidebar; MLflow 3 opens experiments on its GenAI view)")
    if _has_optuna_dashboard():
        from tuner.study.storage import resolve_storage_url

        console.print(f"optuna-dashboard is installed too: optuna-dashboard {redact_url(resolve_storage_url(storage))}",
                      soft_wrap=True)  # a command to copy: never broken across lines
    raise typer.Exit(run_until_stopped(command, child_environment(uri)))


def server(
    backend_store_uri: str = typer.Option("sqlite:///mlruns/mlflow.db", "--backend-store-uri",
                                          envvar="MLFLOW_BACKEND_STORE_URI",
                                          help="where runs are kept: postgresql+psycopg://USER@HOST/DB for several "
                                               "machines, or a local sqlite:///PATH (a URL with a password: set "
                                               "$MLFLOW_BACKEND_STORE_URI instead, off the command line)"),
    artifacts_destination: Path = typer.Option(Path("mlruns/artifacts"), "--artifacts-destination",
                                               help="folder (or shared mount) for artifacts; workers upload "
                                                    "through the server, so they need no access to it"),
    host: str = typer.Option("127.0.0.1", help="bind address; 0.0.0.0 lets other machines in (use a trusted network)"),
    port: int = typer.Option(5000, help="port"),
    workers: int = typer.Option(2, "--workers", min=1, help="server worker processes"),
    allowed_hosts: Optional[str] = typer.Option(None, "--allowed-hosts", help="more Host headers to accept, "
                                                "comma-separated, wildcards allowed (always accepted: localhost, "
                                                "private IPs, this machine's name and FQDN, --host)"),
) -> None:
    """Start an MLflow tracking server for workers on several machines and print the URI they use."""
    import socket

    from tuner.tracking import WILDCARD_ADDRESSES, child_environment, server_command

    if backend_store_uri.startswith("sqlite:///"):
        Path(backend_store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifacts_destination.mkdir(parents=True, exist_ok=True)
    command = server_command(artifacts_destination, host, port, workers, allowed_hosts)
    reachable = socket.gethostname() if host in WILDCARD_ADDRESSES else host
    console.print(f"MLflow tracking server: store {redact_url(backend_store_uri)}, artifacts {artifacts_destination.resolve()}")
    console.print(f"workers use: --tracking-uri http://{reachable}:{port}   (Ctrl-C stops the server)")
    raise typer.Exit(run_until_stopped(command, child_environment(backend_store_uri)))


def run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run the MLflow child in its own process group until it exits or tuner is stopped; a stop
    (SIGINT, SIGTERM, SIGHUP) is passed to the whole group, which is killed if it lingers. A watcher
    leads the group and stops it when tuner itself is killed (`tuner.core.child_group`)."""
    from tuner.core.child_group import guarded_command, stop_group

    child = subprocess.Popen(guarded_command(command), env=env, start_new_session=True)

    def stop(signum: int, _frame) -> None:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)  # one stop; the clean-up is not cut short
        raise _Stopped(signum)  # out of `child.wait()`, which holds the lock a second wait needs to see the exit

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), stop)
    try:
        return child.wait()
    except _Stopped as stopped:
        stop_group(child.pid, wait=child.wait)
        raise typer.Exit(130 if stopped.signum == signal.SIGINT else 128 + stopped.signum) from None


class _Stopped(Exception):
    """tuner was asked to stop (by `signum`) while its MLflow child ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _has_optuna_dashboard() -> bool:
    """Whether to name optuna-dashboard too: it is optional, so only where it is installed."""
    import importlib.util

    return importlib.util.find_spec("optuna_dashboard") is not None
