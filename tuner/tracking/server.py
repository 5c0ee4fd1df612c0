"""Where MLflow is: the tracking URI, a local store's artifact root, and the `tuner server` command.

An HTTP tracking server must answer its health check in seconds before anything is written.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tuner.core.errors import StorageError
from tuner.core.secrets import redact_url

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
HEALTH_TIMEOUT_S = 5
# MLflow's HTTP client retries a dead server for minutes per call; a study should notice in seconds
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("TUNER_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root_for(uri: str) -> str | None:
    """Local SQLite stores keep artifacts beside the database (MLflow 3 refuses ./mlruns file stores)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


# MLflow's own default Host headers (localhost and private IPs), which `--allowed-hosts` replaces
LOCAL_AND_PRIVATE_HOSTS = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0", "localhost:*", "127.0.0.1:*", "[[]::1]:*",
                           "0.0.0.0:*", "192.168.*", "10.*", *[f"172.{i}.*" for i in range(16, 32)], "fc00:*", "fd00:*"]
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, port: int, extra: str | None = None) -> list[str]:
    """Host headers the server accepts: MLflow's defaults, this machine's names, the bound address
    and `extra` (comma-separated), so workers reaching it as http://HOSTNAME:PORT are not refused."""
    names = {socket.gethostname(), socket.getfqdn()} | ({host} if host not in WILDCARD_ADDRESSES else set())
    mine = sorted(f"{name}{suffix}" for name in names if name for suffix in ("", f":{port}"))
    given = [h.strip() for h in (extra or "").split(",") if h.strip()]
    return list(dict.fromkeys(LOCAL_AND_PRIVATE_HOSTS + mine + given))


def server_command(artifacts_destination: Path, host: str, port: int,
                   workers: int, extra_allowed_hosts: str | None = None) -> list[str]:
    """`mlflow server` proxying artifacts, so workers on other machines need only the HTTP address.
    Its store comes from the environment (`child_environment`), not the command line `ps` shows."""
    return [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", str(Path(artifacts_destination).resolve()), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--allowed-hosts", ",".join(allowed_hosts(host, port, extra_allowed_hosts))]


def child_environment(backend_store_uri: str) -> dict[str, str]:
    """The environment of an `mlflow ui` / `mlflow server` child: the store URI (which may hold a
    password) where MLflow reads it, `MLFLOW_BACKEND_STORE_URI`; no GenAI job runners (7 idle processes)."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": backend_store_uri}


def check_server(uri: str) -> None:
    """An HTTP tracking URI must answer its health check; other URIs pass (nothing is written either way)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not isinstance(exc, requests.HTTPError) else str(exc)[:120]
        raise StorageError(f"MLflow tracking server {redact_url(uri)} does not answer ({reason}); start it with "
                           "`tuner server` or check --tracking-uri") from None
