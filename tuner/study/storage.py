"""Opening Optuna storages: URLs, SQLite on a local disk, the journal file, PostgreSQL, heartbeats.

`open_storage` is the one way in: a bad or unsafe URL is refused in one line before anything is
written, and a heartbeat-stale trial (a worker that died) is re-queued by `StaleTrials`.
`load_existing` finds a study by name in a storage, or says which studies there are.
"""

from __future__ import annotations

import os
import random
import re
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from tuner.core.errors import StorageError, StudyFileError
from tuner.core.secrets import redact_url

DEFAULT_STORAGE = "sqlite:///studies/optuna.db"
HEARTBEAT_S = 30
HEARTBEAT_ENV = "TUNER_HEARTBEAT_S"
GRACE_BEATS = 4  # heartbeats a running trial may miss before its worker is presumed dead

optuna.logging.set_verbosity(optuna.logging.WARNING)


def resolve_storage_url(url: str | None = None) -> str:
    return url or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats ($TUNER_HEARTBEAT_S, tests use 1-2 s)."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return HEARTBEAT_S
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(f"{HEARTBEAT_ENV}={raw!r} must be a whole number of seconds, at least 1")
    return value


def local_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL; None for a server or an in-memory database."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and ":memory:" not in url:
            return Path(url.removeprefix(scheme).split("?")[0])
    return None


def open_storage(url: str | None = None, create: bool = True) -> optuna.storages.BaseStorage:
    """Optuna storage with heartbeats (RDB) or a journal file; a bad or unsafe URL is one clear line.

    Several processes may open a fresh storage at the same moment: the schema is created by the
    first and the others retry, so no worker dies of a creation race. Without `create` (commands
    that only read) a local file that is not there is one line, and nothing is created.
    """
    url = normalize_url(resolve_storage_url(url))
    path = local_file(url)
    if not create and path is not None and not path.is_file():
        raise StorageError(f"no storage at {path}: check --storage or $TUNER_STORAGE "
                           "(`tuner study run` creates it)")
    if url.startswith("journal:///"):
        if HEARTBEAT_ENV in os.environ:
            raise StorageError(
                f"{HEARTBEAT_ENV} asks for heartbeats, which the journal storage cannot keep (a killed worker's trial "
                "would stay RUNNING); use sqlite:///PATH on one machine or postgresql+psycopg://USER@HOST/DB")
        from optuna.storages.journal import JournalFileBackend

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:  # a file that is not an Optuna journal
            raise StorageError(f"storage {path} is not a readable Optuna journal ({type(exc).__name__}); "
                               "check --storage") from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
        _prepare_sqlite(Path(url.removeprefix("sqlite:///")))
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    interval = heartbeat_interval()
    for attempt in range(8):
        try:
            storage = ClaimingRDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=interval * GRACE_BEATS,
                heartbeat_stale_trial_callback=StaleTrials(),
            )
            if url.startswith("sqlite:///"):
                sync_at_checkpoints(storage.engine)
            return storage
        except Exception as exc:  # SQLAlchemy raises ArgumentError, OperationalError, NoSuchModuleError...
            if _is_creation_race(exc) and attempt < 7:
                time.sleep(0.1 * 2 ** attempt + random.random() * 0.2)
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = re.sub(r"^\([\w.]+\) ", "", first)[:240]  # SQLAlchemy's "(psycopg.OperationalError) " prefix
            raise StorageError(f"storage {redact_url(url)} cannot be opened ({first}); check --storage") from None
    raise AssertionError("unreachable")


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage whose queued (WAITING) trial goes to exactly one worker.

    Optuna claims a queued trial by reading its state, then writing RUNNING. On SQLite the read is
    outside the write's transaction (Python's sqlite3 begins one only at the UPDATE), so two workers
    can both read WAITING and both run the trial; the second then fails with "Cannot tell a
    COMPLETE trial". One conditional UPDATE is the claim instead: the database lets one row change.
    """

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        claim = (sqlalchemy.update(models.TrialModel)
                 .where(models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.WAITING)
                 .values(state=TrialState.RUNNING, datetime_start=datetime.now()))
        with self.engine.begin() as connection:
            return connection.execute(claim).rowcount == 1


def sync_at_checkpoints(engine: Any) -> None:
    """`synchronous=NORMAL` on a WAL SQLite engine's connections: a commit then waits for no disk sync
    (the log is synced at checkpoints), a few ms saved per trial write. A killed process loses
    nothing; a power cut may lose the last commits, never the database."""
    from sqlalchemy import event

    if not event.contains(engine, "connect", _synchronous_normal):  # engines may be shared per URL
        event.listen(engine, "connect", _synchronous_normal)
        engine.dispose()  # connections opened before now reconnect with it


def _synchronous_normal(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs", "ceph",
                       "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "davfs", "fuse.s3fs"}


def normalize_url(url: str) -> str:
    """Refuse what SQLAlchemy would reject obscurely; `postgresql://` means the installed psycopg 3 driver."""
    if url.startswith("journal:///"):
        return url
    if "://" not in url:
        raise StorageError(f"storage {url!r} is not a URL; use sqlite:///PATH, postgresql+psycopg://USER@HOST/DB "
                           "or journal:///PATH")
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme.split("+", 1)[0] not in STORAGE_SCHEMES:
        raise StorageError(f"storage URL scheme {scheme!r} is not supported; use sqlite:///PATH (one machine), "
                           "postgresql+psycopg://USER:PASSWORD@HOST/DB (several machines) or journal:///PATH")
    return url


def _prepare_sqlite(path: Path) -> None:
    """WAL and a busy timeout let local workers read while one writes; a network disk cannot lock SQLite safely."""
    if str(path) == ":memory:":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    filesystem = filesystem_type(path.parent)
    if filesystem in NETWORK_FILESYSTEMS:
        raise StorageError(
            f"SQLite storage {path} is on a network filesystem ({filesystem}), where its locks are unsafe for "
            "several workers; use postgresql+psycopg://USER@HOST/DB or journal:///PATH")
    import sqlite3

    connection = sqlite3.connect(path, timeout=60)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:  # "file is not a database": a corrupt or foreign file
        raise StorageError(f"storage {path} is not a usable SQLite database ({exc}); check --storage") from None
    finally:
        connection.close()


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type holding `path`, from /proc/mounts (longest mount point that contains it)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _is_creation_race(exc: Exception) -> bool:
    """Errors of two processes creating the same schema at once (PostgreSQL catalog, SQLite lock)."""
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "database is locked", "deadlock detected",
                                   "unique constraint failed"))


class StaleTrials:
    """Heartbeat-stale trial handler: re-queue it with the same params, then tell the hooks (MLflow).

    Optuna calls it in the worker that notices the stale trial, once per trial.
    """

    def __init__(self, max_retry: int = 2) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.hooks: list[Callable[[FrozenTrial], None]] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        for hook in self.hooks:
            hook(trial)


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def load_existing(name: str, storage_url: str | None = None) -> optuna.Study:
    storage = open_storage(storage_url, create=False)
    study = find_study(storage, name)
    if study is None:
        known = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise StudyFileError(f"no study named {name!r} in {redact_url(resolve_storage_url(storage_url))} (studies: {known})")
    return study


def heartbeat_of(study: optuna.Study) -> int | None:
    """The storage's heartbeat interval in seconds; None for the journal storage, which keeps none."""
    getter = getattr(study._storage, "get_heartbeat_interval", None)
    return getter() if getter else None


def claim_study_attr(study: optuna.Study, key: str, value: str) -> str:
    """Write a study attribute only if no one has, and return the stored value: the first writer wins.

    Optuna's own `set_user_attr` overwrites, so two workers starting together would each keep their
    own value. An RDB storage inserts the row (its unique key refuses the second writer); the journal
    logs one key per writer and every reader takes the first in the log's order.
    """
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # an RDB storage under Optuna's cache

    def stored() -> str | None:
        attrs = storage.get_study_user_attrs(study._study_id)
        return attrs.get(key, next((v for k, v in attrs.items() if k.startswith(f"{key}/")), None))

    if (found := stored()) is not None:
        return found
    if isinstance(backend, optuna.storages.RDBStorage):
        import json

        from optuna.storages._rdb import models
        from sqlalchemy.exc import IntegrityError

        session = backend.scoped_session()
        try:
            session.add(models.StudyUserAttributeModel(study_id=study._study_id, key=key, value_json=json.dumps(value)))
            session.commit()
        except IntegrityError:
            session.rollback()
        finally:
            session.close()
    else:
        study.set_user_attr(f"{key}/{value}", value)
    return stored()


def fail_stale(study: optuna.Study) -> None:
    """Fail (and, through `StaleTrials`, re-queue) the trials whose worker stopped beating."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
