"""Everything tuner writes to MLflow: one experiment and parent run per study, a child run per trial.

Only this module talks to MLflow. It uses `MlflowClient` (no fluent global state, so worker
processes and threads stay independent) and batches metrics with `log_batch`. If the tracking
store goes away mid-study the search goes on: the tracker says once that tracking is degraded.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from tuner.errors import StorageError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
_BATCH = 1000
log = logging.getLogger("tuner")


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("TUNER_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root_for(uri: str) -> str | None:
    """Local SQLite stores keep artifacts beside the database (MLflow 3 refuses ./mlruns file stores)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


class Tracker:
    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        for noisy in ("alembic", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.degraded = False

    def check(self) -> None:
        """Fail early, writing nothing, when the store cannot be reached."""
        self._raising(lambda: self.client.search_experiments(max_results=1))

    def experiment_id(self, name: str) -> str:
        """Get or create the study's experiment."""
        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            return self.client.create_experiment(name, artifact_location=artifact_root_for(self.uri))

        return self._raising(get_or_create)

    def _raising(self, action):
        try:
            return action()
        except Exception as exc:  # MLflow raises many types for a bad URI or a dead server
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"MLflow tracking store {self.uri} cannot be used ({first}); check --tracking-uri") from None

    def open_study_run(self, experiment_id: str, study_uid: str, name: str, tags: dict[str, str],
                       params: dict[str, Any], files: dict[str, str]) -> str:
        """The study's parent run: found again by its uid on resume, created on first use."""
        run_id = self.find_study_run(experiment_id, study_uid)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        from mlflow.entities import Param

        run = self.client.create_run(experiment_id, run_name=name,
                                     tags={**tags, "tuner.role": "study", "tuner.study_uid": study_uid})
        self.client.log_batch(run.info.run_id, params=[Param(k, _as_text(v)) for k, v in params.items()])
        for filename, text in files.items():
            self.client.log_text(run.info.run_id, text, filename)
        return run.info.run_id

    def find_study_run(self, experiment_id: str, study_uid: str) -> str | None:
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`tuner.study_uid` = '{study_uid}' and tags.`tuner.role` = 'study'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def log_finalize(self, study_name: str, study_uid: str, report: Any, markdown: str) -> str:
        """A `finalize` run under the study's parent run: scores, the report, the val-vs-test plot."""
        import json
        from dataclasses import asdict

        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from tuner.plots import validation_vs_test

        experiment_id = self.experiment_id(study_name)
        parent = self.find_study_run(experiment_id, study_uid)
        tags = {"tuner.role": "finalize", "test_looks": str(report.test_looks)}
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run_id = self.client.create_run(experiment_id, run_name=f"finalize (test look {report.test_looks})", tags=tags).info.run_id
        winner, m, now = report.winner, report.metric, int(time.time() * 1000)
        metrics = {f"winner_val_{m}": winner.val, f"winner_test_{m}": winner.test,
                   "winner_optimism": winner.optimism, "test_looks": report.test_looks,
                   "expected_selection_optimism": report.expected_selection_optimism}
        if report.spearman is not None:
            metrics["spearman_val_test"] = report.spearman
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.log_text(run_id, markdown, "finalize.md")
        self.client.log_text(run_id, json.dumps(asdict(report), indent=2, default=str), "finalize.json")
        scores = {f"#{r.trial} {r.family}": (r.val, r.test) for r in report.rows}
        self.client.log_figure(run_id, validation_vs_test(scores, report.metric), "plots/validation_vs_test.png")
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
            "chosen": record["chosen"], "mlflow.note.content": " ".join(record.get("verdict", []))[:5000],
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
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in scores.items()]
            metrics.append(Metric("duration_s", duration, now, 0))
            metrics += [Metric(key, float(v), now, step) for key, values in curves.items()
                        for step, v in enumerate(values, start=1) if v == v]
            for start in range(0, len(metrics), _BATCH):
                self.client.log_batch(run_id, metrics=metrics[start:start + _BATCH])
            self.client.set_tag(run_id, "state", state)
            for value in scores.values():  # the trial's validation score, also as a tag the UI sorts by
                self.client.set_tag(run_id, "score", f"{value:.6f}")
            if error:
                self.client.set_tag(run_id, "error", error[:5000])
            self.client.set_terminated(run_id, status=state if state in ("FAILED", "KILLED") else "FINISHED")

        self._safely(finish)

    def finish_study(self, run_id: str, metrics: dict[str, float], tags: dict[str, str], status: str = "FINISHED") -> None:
        def finish() -> None:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                                  tags=[RunTag(k, v) for k, v in tags.items()])
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

    def _safely(self, action):
        try:
            return action()
        except Exception as exc:
            if not self.degraded:
                log.warning("MLflow tracking is degraded (%s); the study goes on and keeps every trial in Optuna",
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self.degraded = True
            return None


def _as_text(value: Any) -> str:
    return str(value)[:6000]
