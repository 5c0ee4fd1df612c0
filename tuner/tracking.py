"""Everything tuner writes to MLflow: one experiment and parent run per study, a child run per trial.

Only this module talks to MLflow. It uses `MlflowClient` (no fluent global state, so worker
processes and threads stay independent) and batches metrics with `log_batch`. If the tracking
store goes away mid-study the search goes on: the tracker says once that tracking is degraded.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tuner.errors import StorageError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
_BATCH = 1000
HEALTH_TIMEOUT_S = 5
# MLflow's HTTP client retries a dead server for minutes per call; a study should notice in seconds
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
log = logging.getLogger("tuner")


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("TUNER_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root_for(uri: str) -> str | None:
    """Local SQLite stores keep artifacts beside the database (MLflow 3 refuses ./mlruns file stores)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


CHAMPION = "champion"  # the registry alias on the newest export of an ensemble
DESCRIPTION = "mlflow.note.content"  # the tag the MLflow UI shows as a run's description


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


# MLflow's own default Host headers (localhost and private IPs), which `--allowed-hosts` replaces
LOCAL_AND_PRIVATE_HOSTS = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0", "localhost:*", "127.0.0.1:*", "[[]::1]:*",
                           "0.0.0.0:*", "192.168.*", "10.*", *[f"172.{i}.*" for i in range(16, 32)], "fc00:*", "fd00:*"]
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, port: int, extra: str | None = None) -> list[str]:
    """Host headers the server accepts: MLflow's defaults, this machine's names, the bound address
    and `extra` (comma-separated), so workers reaching it as http://HOSTNAME:PORT are not refused."""
    import socket

    names = {socket.gethostname(), socket.getfqdn()} | ({host} if host not in WILDCARD_ADDRESSES else set())
    mine = sorted(f"{name}{suffix}" for name in names if name for suffix in ("", f":{port}"))
    given = [h.strip() for h in (extra or "").split(",") if h.strip()]
    return list(dict.fromkeys(LOCAL_AND_PRIVATE_HOSTS + mine + given))


def server_command(backend_store_uri: str, artifacts_destination: Path, host: str, port: int,
                   workers: int, extra_allowed_hosts: str | None = None) -> list[str]:
    """`mlflow server` proxying artifacts, so workers on other machines need only the HTTP address."""
    import sys

    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(Path(artifacts_destination).resolve()), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--allowed-hosts", ",".join(allowed_hosts(host, port, extra_allowed_hosts))]


def check_server(uri: str) -> None:
    """An HTTP tracking URI must answer its health check; other URIs pass (nothing is written either way)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not isinstance(exc, requests.HTTPError) else str(exc)[:120]
        raise StorageError(f"MLflow tracking server {uri} does not answer ({reason}); start it with "
                           "`tuner server` or check --tracking-uri") from None


class Tracker:
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
            raise StorageError(f"MLflow tracking store {self.uri} cannot be used ({first}); check --tracking-uri") from None

    def open_study_run(self, experiment_id: str, study_uid: str, name: str, tags: dict[str, str],
                       params: dict[str, Any], files: dict[str, str]) -> str:
        """The study's parent run: found again by its uid on resume, created on first use.

        On resume the description (`mlflow.note.content` in `tags`) and `files` are written again,
        because the study file's description and budget may have changed since the run was created.
        Workers on several machines may create it at the same moment; all of them then keep the
        oldest and delete their own, so the study has one parent run.
        """
        run_id = self.find_study_run(experiment_id, study_uid)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            if DESCRIPTION in tags:
                self.client.set_tag(run_id, DESCRIPTION, tags[DESCRIPTION])
            if files:
                self.log_artifacts(run_id, files)
            return run_id
        from mlflow.entities import Param

        run = self.client.create_run(experiment_id, run_name=name,
                                     tags={**tags, "tuner.role": "study", "tuner.study_uid": study_uid})
        self.client.log_batch(run.info.run_id, params=[Param(k, _as_text(v)) for k, v in params.items()])
        for filename, text in files.items():
            self.client.log_text(run.info.run_id, text, filename)
        keeper = self.find_study_run(experiment_id, study_uid)
        if keeper != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return keeper

    def find_study_run(self, experiment_id: str, study_uid: str) -> str | None:
        """The oldest parent run of the study (ties broken by run id, the same answer in every worker)."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`tuner.study_uid` = '{study_uid}' and tags.`tuner.role` = 'study'",
        )
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if found else None

    def close_lost_trial_runs(self, experiment_id: str, parent_run_id: str, statuses: dict[int, str]) -> None:
        """End trial runs still RUNNING whose trial is over (`statuses`: trial number -> MLflow status).

        A worker killed with SIGKILL cannot close its run; the worker that finds its trial stale does.
        """
        if not statuses:
            return

        def close() -> None:
            running = self.client.search_runs(
                [experiment_id], max_results=1000,
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'")
            for run in running:
                number = run.data.tags.get("trial")
                if number is None or not number.isdigit() or int(number) not in statuses:
                    continue
                status = statuses[int(number)]
                if status == "KILLED":
                    self.client.set_tag(run.info.run_id, "state", "FAIL")
                    self.client.set_tag(run.info.run_id, "error", "worker lost (no heartbeat); trial queued again")
                self.client.set_terminated(run.info.run_id, status=status)

        self._safely(close)

    def log_finalize(self, study_name: str, study_uid: str, report: Any, markdown: str) -> str:
        """A `finalize` run under the study's parent run: scores, the report, the val-vs-test plot (on both runs)."""
        import json
        from dataclasses import asdict

        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from tuner.finalize import search_score_name
        from tuner.plots import FINALIZE_PLOT, png_bytes, validation_vs_test

        experiment_id = self.experiment_id(study_name)
        parent = self.find_study_run(experiment_id, study_uid)
        tags = {"tuner.role": "finalize", "test_looks": str(report.test_looks)}
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run_id = self.client.create_run(experiment_id, run_name=f"finalize (test look {report.test_looks})", tags=tags).info.run_id
        winner, m, now = report.winner, report.metric, int(time.time() * 1000)
        score = search_score_name(report)
        metrics = {f"winner_{score}": winner.val, f"winner_test_{m}": winner.test,
                   "winner_optimism": winner.optimism, "test_looks": report.test_looks,
                   "expected_selection_optimism": report.expected_selection_optimism}
        if report.spearman is not None:
            metrics[f"spearman_{score.split('_')[0]}_test"] = report.spearman  # spearman_val_test or spearman_cv_test
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.log_text(run_id, markdown, "finalize.md")
        self.client.log_text(run_id, json.dumps(asdict(report), indent=2, default=str), "finalize.json")
        scores = {f"#{r.trial} {r.family}": (r.val, r.test) for r in report.rows}
        scatter = {FINALIZE_PLOT: png_bytes(validation_vs_test(scores, report.metric, score))}
        self.log_artifacts(run_id, scatter)
        if parent:  # beside the study's own plots, so its run shows them all
            self.log_artifacts(parent, scatter)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def log_ensemble(self, name: str, record: dict[str, Any], markdown: str, files: dict[str, bytes | str]) -> str:
        """The run `ensemble/NAME` in the `ensembles` experiment: params, each blend's oof_/test_ scores,
        the Markdown report, the build record and the plots."""
        import json

        from mlflow.entities import Metric, Param

        experiment_id = self.experiment_id("ensembles")
        run_id = self.client.create_run(experiment_id, run_name=f"ensemble/{name}", tags={
            "tuner.role": "ensemble", "ensemble": name, "studies": ",".join(record["studies"]),
            "chosen": record["chosen"], DESCRIPTION: " ".join(record.get("verdict", []))[:5000],
        }).info.run_id
        try:
            m, now = record["metric"], int(time.time() * 1000)
            params = {"studies": ",".join(record["studies"]), "task": record["task"], "metric": m,
                      "folds": record["folds"], "per_family": record["per_family"],
                      "correlation_threshold": record["correlation_threshold"], "chosen": record["chosen"],
                      "weighting": record["weighting"], "members": len(record["members"]),
                      "dropped": len(record["dropped"]), "fingerprint": record["fingerprint"],
                      "split_digest": record["split_digest"]}
            metrics = {f"{blend}/{split}_{m}": row[split] for blend, row in record["blends"].items()
                       for split in ("oof", "test")}
            metrics.update({f"{blend}/test_{m}_se": row["test_se"] for blend, row in record["blends"].items()})
            self.client.log_batch(run_id, params=[Param(k, _as_text(v)) for k, v in params.items()],
                                  metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            self.log_artifacts(run_id, {"ensemble.md": markdown, "build.json": json.dumps(record, indent=2, default=str),
                                        **files})
            self.client.set_terminated(run_id, status="FINISHED")
        except BaseException:
            self.delete_run(run_id)
            raise
        return run_id

    def delete_run(self, run_id: str) -> None:
        """Remove a run whose work did not complete, so no orphan run is left behind."""
        self.client.delete_run(run_id)

    def start_trial(self, experiment_id: str, parent_run_id: str, trial_number: int, family: str,
                    params: dict[str, Any], tags: dict[str, str]) -> str | None:
        def start() -> str:
            from mlflow.entities import Param
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            run = self.client.create_run(
                experiment_id, run_name=f"trial-{trial_number:03d} {family}",
                tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id, "tuner.role": "trial",
                      "trial": str(trial_number), "family": family, "state": "RUNNING"},
            )
            self.client.log_batch(run.info.run_id, params=[Param("family", family)] + [
                Param(k, _as_text(v)) for k, v in params.items()])
            return run.info.run_id

        return self._safely(start)

    def finish_trial(self, run_id: str | None, state: str, scores: dict[str, float],
                     curves: dict[str, list[float]], duration: float, error: str | None = None) -> None:
        if run_id is None:
            return

        def finish() -> None:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in scores.items()]
            metrics.append(Metric("duration_s", duration, now, 0))
            metrics += [Metric(key, float(v), now, step) for key, values in curves.items()
                        for step, v in enumerate(values, start=1) if v == v]
            tags = [RunTag("state", state)]
            for name, value in scores.items():  # the trial's search score, also as a tag the UI sorts by
                tags += [RunTag("score", f"{value:.6f}"), RunTag("score_name", name)]  # val_<metric> or cv_<metric>
            if error:
                tags.append(RunTag("error", error[:5000]))
            for start in range(0, max(len(metrics), 1), _BATCH):  # one round trip for a short trial
                self.client.log_batch(run_id, metrics=metrics[start:start + _BATCH], tags=tags if start == 0 else [])
            self.client.set_terminated(run_id, status=state if state in ("FAILED", "KILLED") else "FINISHED")

        self._safely(finish)

    def finish_study(self, run_id: str, metrics: dict[str, float], tags: dict[str, str],
                     status: str | None = "FINISHED") -> None:
        """Log the study's summary on its parent run and end it with `status`; None leaves it RUNNING."""
        def finish() -> None:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                                  tags=[RunTag(k, v) for k, v in tags.items()])
            if status is not None:
                self.client.set_terminated(run_id, status=status)

        self._safely(finish)

    def existing_study_run(self, name: str, study_uid: str) -> tuple[str, str]:
        """The experiment and parent run of a study that has run, for commands that annotate it."""
        def find() -> tuple[str, str | None]:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                return "", None
            return experiment.experiment_id, self.find_study_run(experiment.experiment_id, study_uid)

        experiment_id, run_id = self._raising(find)
        if run_id is None:
            raise StorageError(f"study {name!r} has no MLflow run in {self.uri}; pass the --tracking-uri it ran with")
        return experiment_id, run_id

    def _trial_run(self, experiment_id: str, parent_run_id: str, trial_number: int) -> str | None:
        runs = self.client.search_runs(
            [experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.trial = '{trial_number}'")
        return runs[0].info.run_id if runs else None

    def trial_curves(self, experiment_id: str, parent_run_id: str, trial_numbers: list[int],
                     prefix: str = "epoch/") -> dict[int, dict[str, list[float]]]:
        """Per-step curves (`epoch/val_loss` -> values by step) read back from the trials' child runs."""
        found: dict[int, dict[str, list[float]]] = {}
        for number in trial_numbers:
            run_id = self._trial_run(experiment_id, parent_run_id, number)
            if run_id is None:
                continue
            keys = [k for k in self.client.get_run(run_id).data.metrics if k.startswith(prefix)]
            found[number] = {
                key.removeprefix(prefix): [m.value for m in sorted(self.client.get_metric_history(run_id, key),
                                                                   key=lambda m: m.step)]
                for key in sorted(keys)
            }
        return found

    def mark_best(self, experiment_id: str, parent_run_id: str, trial_number: int) -> None:
        """Tag the best trial's child run `best=true` and take the tag off any earlier best."""
        best = self._trial_run(experiment_id, parent_run_id, trial_number)
        marked = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.best = 'true'")
        for run in marked:
            if run.info.run_id != best:
                self.client.delete_tag(run.info.run_id, "best")
        if best is not None:
            self.client.set_tag(best, "best", "true")

    def log_artifacts(self, run_id: str, files: dict[str, bytes | str]) -> None:
        """Write files (artifact path, e.g. `plots/history.png`, -> content) to the run, replacing same-named ones."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tuner-artifacts-") as folder:
            for name, content in files.items():
                path = Path(folder, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
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

    def publish_model(self, folder: Path, name: str, run_id: str | None, experiment_name: str,
                      run_name: str, tags: dict[str, str], metrics: dict[str, float]) -> PublishedModel:
        """Log a saved MLflow model folder to a run and register it as a new version of `name`.

        The run is `run_id` when it still exists in this store, else a new run `run_name` in the
        experiment `experiment_name`, with `metrics`. The alias `champion` moves to the new version.
        All or nothing: on any failure, Ctrl-C included, what this call created is removed again.
        """
        record: dict[str, Any] = {}
        try:
            return self._publish(folder, name, run_id, experiment_name, run_name, tags, metrics, record)
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

    def _publish(self, folder, name, run_id, experiment_name, run_name, tags, metrics, record) -> PublishedModel:
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
        version = str(self.client.create_model_version(name, model.artifact_location, run_id=run_id, tags=tags,
                                                       model_id=model.model_id).version)
        record["version"] = version
        self.client.set_registered_model_alias(name, CHAMPION, version)
        if "created_run" in record:
            self.client.set_terminated(run_id, status="FINISHED")
        return PublishedModel(name, version, run_id, model.model_id, "created_run" in record,
                              record.get("created_registered_model", False), record["previous_champion"])

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

    def _safely(self, action):
        try:
            return action()
        except Exception as exc:
            if not self.degraded:
                log.warning("MLflow tracking is degraded (%s); the study goes on and keeps every trial in Optuna",
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self.degraded = True
            return None


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


def _sync_at_checkpoints(client: Any, uri: str) -> None:
    """`synchronous=NORMAL` on the client's SQLite connections: in WAL mode a commit then waits for no
    disk sync (the log is synced at checkpoints). A killed process loses nothing; a power cut may
    lose the last commits, never the database. Skipped where MLflow keeps its engine elsewhere."""
    engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
    if not uri.startswith("sqlite:///") or engine is None:
        return
    from sqlalchemy import event

    if not event.contains(engine, "connect", _synchronous_normal):  # MLflow shares one engine per URI
        event.listen(engine, "connect", _synchronous_normal)
        engine.dispose()  # connections opened while MLflow checked the schema reconnect with it


def _synchronous_normal(connection, record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _as_text(value: Any) -> str:
    return str(value)[:6000]
