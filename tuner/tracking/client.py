"""The MLflow client every tracker shares: one per command, no fluent global state.

It uses `MlflowClient` (so worker processes and threads stay independent). Calls that set a
command up raise one clear `StorageError` (`_raising`); calls made while a study runs only warn
once that tracking is degraded and let the search go on (`_safely`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tuner.core.errors import StorageError
from tuner.core.secrets import redact_url
from tuner.study.storage import sync_at_checkpoints
from tuner.tracking.server import HTTP_DEFAULTS, artifact_root_for, check_server, resolve_tracking_uri

log = logging.getLogger("tuner")


class TrackingClient:
    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        for noisy in ("alembic", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        if self.uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        with _schema_lock(self.uri):  # the client creates the schema; local workers start together
            _seed_new_local_store(self.uri)
            _write_ahead_log(self.uri)
            self.client = self._raising(lambda: MlflowClient(tracking_uri=self.uri))
        _sync_at_checkpoints(self.client, self.uri)
        self.degraded = False

    def check(self) -> None:
        """Fail early, writing nothing, when the store cannot be reached (in seconds, not MLflow's minutes of retries)."""
        check_server(self.uri)
        self._raising(lambda: self.client.search_experiments(max_results=1))

    def experiment_id(self, name: str) -> str:
        """Get or create the study's experiment (workers starting together may race to create it)."""
        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                return self.client.create_experiment(name, artifact_location=artifact_root_for(self.uri))
            except Exception:
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

        return self._raising(get_or_create)

    def _raising(self, action):
        try:
            return action()
        except Exception as exc:  # MLflow raises many types for a bad URI or a dead server
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"MLflow tracking store {redact_url(self.uri)} cannot be used ({redact_url(first)}); "
                               "check --tracking-uri") from None

    def _safely(self, action):
        try:
            return action()
        except Exception as exc:
            if not self.degraded:
                log.warning("MLflow tracking is degraded (%s); the study goes on and keeps every trial in Optuna",
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self.degraded = True
            return None

    def delete_run(self, run_id: str) -> None:
        """Remove a run whose work did not complete, so no orphan run is left behind."""
        self.client.delete_run(run_id)

    def log_artifacts(self, run_id: str, files: dict[str, bytes | str]) -> None:
        """Write files (artifact path, e.g. `plots/history.png`, -> content) to the run, replacing same-named ones."""
        with tempfile.TemporaryDirectory(prefix="tuner-artifacts-") as folder:
            for name, content in files.items():
                path = Path(folder, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(redact_url(content).encode() if isinstance(content, str) else content)  # texts: no password
            self.client.log_artifacts(run_id, folder)

    def replace_plots(self, run_id: str, images: dict[str, bytes], owns: Callable[[str], bool]) -> None:
        """Log `images` (paths under `plots/`), then delete the run's other plots that `owns` claims.

        Logging alone overwrites same-named files but keeps the rest, so a plot that could not be
        drawn this time would keep its old PNG. `owns` leaves other commands' plots on the same run alone.
        """
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        stale = [a.path for a in self.client.list_artifacts(run_id, "plots")
                 if not a.is_dir and a.path not in images and owns(a.path)]
        self.log_artifacts(run_id, images)
        if stale:
            repository = get_artifact_repository(self.client.get_run(run_id).info.artifact_uri, tracking_uri=self.uri)
            for path in stale:
                repository.delete_artifacts(path)


@contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local SQLite store while MLflow creates or migrates its schema."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(f"{uri.removeprefix('sqlite:///')}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _seed_new_local_store(uri: str) -> None:
    """A local SQLite store about to be made is copied from a migrated one (`store_template`): seconds
    less for a new project's first command."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.exists():
        from tuner.tracking.store_template import seed_local_store

        seed_local_store(database, artifact_root_for(uri))


def _write_ahead_log(uri: str) -> None:
    """Switch a local SQLite store to WAL journaling (kept in the file; readers such as `tuner ui` follow).

    With the default rollback journal every one of MLflow's commits syncs the journal and the
    database to disk, several syncs per trial run; in WAL mode a commit appends to one log file.
    Processes on one machine share a WAL database as before (not over a network file system, where
    SQLite is unsafe anyway). Best effort: a store that is busy or read-only stays as it is."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return
    import sqlite3

    try:
        with closing(sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=5)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def _sync_at_checkpoints(client, uri: str) -> None:
    """The client's SQLite connections in `synchronous=NORMAL` (tuner.study.storage.sync_at_checkpoints);
    skipped where MLflow keeps its engine elsewhere."""
    engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
    if uri.startswith("sqlite:///") and engine is not None:
        sync_at_checkpoints(engine)
