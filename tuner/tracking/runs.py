"""The runs tuner writes: a parent run per study, a child run per trial, and the finalize and ensemble runs.

Trial runs are written with `_safely`: if the store goes away mid-study the search goes on.
Metrics go in batches (`log_batch`), one round trip for a short trial. MLflow (and matplotlib, for
the finalize plot) are imported inside the methods: they take seconds to import, and a command
that tracks nothing should not pay for them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, Callable

from tuner.core.errors import StorageError
from tuner.core.secrets import redact_url
from tuner.tracking.client import TrackingClient

_BATCH = 1000
DESCRIPTION = "mlflow.note.content"  # the tag the MLflow UI shows as a run's description


class StudyRuns(TrackingClient):
    """The study's parent run and its trials' child runs, read back too (curves, the best run)."""

    def open_study_run(self, experiment_id: str, study_uid: str, name: str, tags: dict[str, str],
                       params: dict[str, Any], files: dict[str, str],
                       claim: Callable[[str], str] | None = None) -> str:
        """The study's parent run: found again by its uid on resume, created on first use.

        On resume the description (`mlflow.note.content` in `tags`) and `files` are written again,
        because the study file's description and budget may have changed since the run was created.
        Workers on several machines may create it at the same moment: `claim` (the Optuna storage's
        first-writer-wins record, tuner.study.storage.claim_study_attr) names the one they all keep,
        and each deletes its own if it lost. Without `claim`, the oldest run is kept.
        """
        from mlflow.entities import Param

        found = self.find_study_run(experiment_id, study_uid)
        created = None
        if found is None:
            created = self.client.create_run(experiment_id, run_name=name, tags={
                **tags, "tuner.role": "study", "tuner.study_uid": study_uid}).info.run_id
            self.client.log_batch(created, params=[Param(k, _as_text(v)) for k, v in params.items()])
            for filename, text in files.items():
                self.client.log_text(created, redact_url(text), filename)
        candidate = found or created
        keeper = claim(candidate) if claim else self.find_study_run(experiment_id, study_uid)
        if keeper != candidate and not self._active(keeper):  # the claimed run was deleted since
            keeper = candidate
        if created is not None and keeper != created:
            self.client.delete_run(created)
        if keeper != created:
            self.client.update_run(keeper, status="RUNNING")
            if DESCRIPTION in tags:
                self.client.set_tag(keeper, DESCRIPTION, tags[DESCRIPTION])
            if files:
                self.log_artifacts(keeper, files)
        return keeper

    def _active(self, run_id: str | None) -> bool:
        try:
            return run_id is not None and self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # a run id of another tracking store
            return False

    def find_study_run(self, experiment_id: str, study_uid: str) -> str | None:
        """The oldest parent run of the study (ties broken by run id, the same answer in every worker)."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`tuner.study_uid` = '{study_uid}' and tags.`tuner.role` = 'study'",
        )
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if found else None

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
                tags.append(RunTag("error", redact_url(error)[:5000]))
            for start in range(0, max(len(metrics), 1), _BATCH):  # one round trip for a short trial
                self.client.log_batch(run_id, metrics=metrics[start:start + _BATCH], tags=tags if start == 0 else [])
            self.client.set_terminated(run_id, status=state if state in ("FAILED", "KILLED") else "FINISHED")

        self._safely(finish)

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
            raise StorageError(f"study {name!r} has no MLflow run in {redact_url(self.uri)}; pass the --tracking-uri it ran with")
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

    def log_finalize(self, study_name: str, study_uid: str, report: Any, markdown: str) -> str:
        """A `finalize` run under the study's parent run: scores, the report, the val-vs-test plot (on both runs)."""
        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from tuner.reporting.plots import FINALIZE_PLOT, png_bytes, validation_vs_test  # matplotlib, for this run only

        experiment_id = self.experiment_id(study_name)
        parent = self.find_study_run(experiment_id, study_uid)
        tags = {"tuner.role": "finalize", "test_looks": str(report.test_looks)}
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run_id = self.client.create_run(experiment_id, run_name=f"finalize (test look {report.test_looks})", tags=tags).info.run_id
        winner, m, now = report.winner, report.metric, int(time.time() * 1000)
        score = report.score_name or f"val_{m}"  # as tuner.reporting.finalize_page.search_score_name reads a report
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


def _as_text(value: Any) -> str:
    """A param's value as MLflow keeps it: text, no URL password, at most 6,000 characters."""
    return redact_url(str(value))[:6000]
