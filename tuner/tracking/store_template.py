"""A new local MLflow store copied from an empty one already migrated, instead of migrated from scratch.

MLflow makes a SQLite store by running every schema migration it has: 3-7 s on two cores, paid by a
new project's first command (out of the quickstart's minute) and by every test with a store of its
own. The migrated empty store is kept once per MLflow version in tuner's cache folder
(`TUNER_CACHE_DIR`, else `$XDG_CACHE_HOME/tuner` or `~/.cache/tuner`) and copied; MLflow then finds
its schema current. Best effort: where the cache cannot be written, MLflow migrates as before.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("TUNER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuner"


def seed_local_store(database: Path, artifact_root: str) -> bool:
    """Put a migrated empty store at `database` (which must not exist yet), its Default experiment's
    artifacts under `artifact_root` as tuner's own experiments keep theirs; False when it could not."""
    try:
        template = _template()
        partial = database.with_name(f".{database.name}.{os.getpid()}.partial")
        shutil.copyfile(template, partial)
        with closing(sqlite3.connect(partial)) as connection, connection:
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                               (f"{artifact_root}/0",))
        os.replace(partial, database)  # whole or not at all: a reader never sees half a store
        return True
    except (OSError, sqlite3.Error):
        return False


def _template() -> Path:
    """The cached migrated store for this MLflow version, made on first use (concurrent makers each
    migrate their own file; the last rename wins, and every one of them is complete)."""
    import mlflow

    template = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.TemporaryDirectory(dir=template.parent, prefix=".making-") as folder:
        made = Path(folder, "empty.db")
        store = SqlAlchemyStore(f"sqlite:///{made}", Path(folder, "artifacts").as_uri())
        store.engine.dispose()
        os.replace(made, template)
    return template
