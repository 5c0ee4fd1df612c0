"""Publishing an exported model: log it to a run, register a new version, move the `champion` alias.

All or nothing: what a failed publish created is taken back again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.core.errors import StorageError
from tuner.tracking.client import TrackingClient

CHAMPION = "champion"  # the registry alias on the newest export of an ensemble
PENDING_TAG = "tuner.pending_export"  # on a version until its export's folder is in place: the staging folder's name
log = logging.getLogger("tuner")


@dataclass
class PublishedModel:
    """What `publish_model` created, so a later failure can take exactly that back."""

    name: str
    version: str
    run_id: str
    model_id: str
    created_run: bool
    created_registered_model: bool
    previous_champion: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class ModelRegistry(TrackingClient):
    """The registry side of a tracker: `publish_model` and its undo, `retract_model`."""

    def publish_model(self, folder: Path, name: str, run_id: str | None, experiment_name: str,
                      run_name: str, tags: dict[str, str], metrics: dict[str, float],
                      pending: str | None = None) -> PublishedModel:
        """Log a saved MLflow model folder to a run and register it as a new version of `name`.

        `pending` (the export's staging folder) marks the version until `settle_model`, so a rerun can
        tell a version whose export was killed before its folder was in place (`pending_versions`).

        The run is `run_id` when it still exists in this store, else a new run `run_name` in the
        experiment `experiment_name`, with `metrics`. The alias `champion` moves to the new version.
        All or nothing: on any failure, Ctrl-C included, what this call created is removed again.
        """
        record: dict[str, Any] = {}
        try:
            return self._publish(folder, name, run_id, experiment_name, run_name, tags, metrics, pending, record)
        except Exception as exc:
            self._take_back(name, record)
            if isinstance(exc, StorageError):
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"could not log or register the model in {self.uri} ({first}); "
                               "nothing was exported") from exc
        except BaseException:  # Ctrl-C: undo, then let it stop the command
            self._take_back(name, record)
            raise

    def _publish(self, folder, name, run_id, experiment_name, run_name, tags, metrics, pending, record) -> PublishedModel:
        """`record` collects what exists so far, for `_take_back`."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

        run = self._existing_run(run_id)
        if run is None:
            experiment_id = self.experiment_id(experiment_name)
            run = self._raising(lambda: self.client.create_run(
                experiment_id, run_name=run_name, tags={**tags, "tuner.role": "export"}))
            record["created_run"] = run.info.run_id
            now = int(time.time() * 1000)
            self.client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        run_id = run.info.run_id
        model = self.client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id, tags=tags)
        record["model_id"] = model.model_id
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        self.client.log_model_artifacts(model.model_id, str(folder))
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        if self._registered_model(name) is None:
            self.client.create_registered_model(name, tags={"tuner.role": "ensemble"})
            record["created_registered_model"] = True
        record["previous_champion"] = self._champion(name)
        # the artifact location, not models:/ID: the registry store would resolve that through
        # the global tracking URI instead of this client's
        version_tags = {**tags, **({PENDING_TAG: pending} if pending else {})}
        version = str(self.client.create_model_version(name, model.artifact_location, run_id=run_id,
                                                       tags=version_tags, model_id=model.model_id).version)
        record["version"] = version
        self.client.set_registered_model_alias(name, CHAMPION, version)
        if "created_run" in record:
            self.client.set_terminated(run_id, status="FINISHED")
        return PublishedModel(name, version, run_id, model.model_id, "created_run" in record,
                              record.get("created_registered_model", False), record["previous_champion"])

    def settle_model(self, name: str, version: str) -> None:
        """The export's folder is in place: its version is no longer pending (best effort; a version left
        pending that the folder's manifest names is settled by the next export)."""
        try:
            self.client.delete_model_version_tag(name, version, PENDING_TAG)
        except Exception as exc:
            log.warning("could not mark version %s of %s as exported in MLflow (%s)", version, name,
                        str(exc).splitlines()[0][:200])

    def pending_versions(self, name: str) -> dict[str, str]:
        """Versions of `name` still marked pending -> the staging folder their export wrote to."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return {}
        return {str(v.version): v.tags[PENDING_TAG] for v in versions if PENDING_TAG in (v.tags or {})}

    def drop_unfinished(self, name: str, version: str, champion: str | None) -> None:
        """Take back a version whose export never placed its folder: the version, its logged model, a run
        made for it; the alias `champion` goes back to `champion` (the version the export folder holds)."""
        model_version = self.client.get_model_version(name, version)
        record: dict[str, Any] = {"version": version, "previous_champion": None}
        if self._champion(name) == version:
            record["previous_champion"] = champion
        if getattr(model_version, "model_id", None):
            record["model_id"] = model_version.model_id
        run = self._existing_run(model_version.run_id)
        if run is not None and run.data.tags.get("tuner.role") == "export":
            record["created_run"] = run.info.run_id
        self._take_back(name, record)

    def retract_model(self, published: PublishedModel) -> None:
        """Undo a `publish_model` whose export failed afterwards (the local folder could not be placed)."""
        self._take_back(published.name, {
            "version": published.version, "model_id": published.model_id,
            "previous_champion": published.previous_champion,
            "created_registered_model": published.created_registered_model,
            **({"created_run": published.run_id} if published.created_run else {})})

    def _take_back(self, name: str, record: dict[str, Any]) -> None:
        """Best effort, newest first: version (and its alias), registered model, logged model, run."""
        steps = []
        if "version" in record:
            steps.append(lambda: self.client.delete_model_version(name, record["version"]))
            if record.get("previous_champion"):
                steps.append(lambda: self.client.set_registered_model_alias(name, CHAMPION, record["previous_champion"]))
        if record.get("created_registered_model"):
            steps.append(lambda: self.client.delete_registered_model(name))
        if "model_id" in record:
            steps.append(lambda: self.client.delete_logged_model(record["model_id"]))
        if "created_run" in record:
            steps.append(lambda: self.client.delete_run(record["created_run"]))
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep undoing the rest; say what is left behind
                log.warning("could not undo part of a failed export in MLflow (%s)", str(exc).splitlines()[0][:200])

    def _existing_run(self, run_id: str | None):
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _registered_model(self, name: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            return None

    def _champion(self, name: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            return None
