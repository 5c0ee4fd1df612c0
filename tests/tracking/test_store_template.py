"""A new local MLflow store is a copy of a migrated empty one kept per MLflow version, not a fresh migration."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import mlflow

from tuner.tracking.client import TrackingClient


def alembic_version(database) -> str:
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_new_store_is_copied_from_the_cached_template_and_its_artifacts_stay_in_the_project(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    first = TrackingClient(f"sqlite:///{tmp_path / 'one' / 'mlflow.db'}")
    template = tmp_path / "cache" / f"mlflow-{mlflow.__version__}-empty.db"
    assert template.is_file() and alembic_version(template) == alembic_version(tmp_path / "one" / "mlflow.db")
    stamp = template.stat().st_mtime_ns

    second = TrackingClient(f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}")
    assert template.stat().st_mtime_ns == stamp  # copied, not made again
    for client, project in ((first, "one"), (second, "two")):
        assert client.client.get_experiment("0").artifact_location == (tmp_path / project / "artifacts").as_uri() + "/0"
        run = client.client.create_run(client.experiment_id("study"))
        assert run.info.artifact_uri.startswith((tmp_path / project / "artifacts").as_uri())
    assert not list((tmp_path / "two").glob(".*partial"))


def test_an_unwritable_cache_leaves_mlflow_to_make_the_store(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("TUNER_CACHE_DIR", str(blocked / "cache"))
    client = TrackingClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    client.check()
    assert client.client.get_experiment_by_name("Default") is not None
    assert not (blocked / "cache").exists()


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    TrackingClient(uri).experiment_id("kept")
    assert TrackingClient(uri).client.get_experiment_by_name("kept") is not None

