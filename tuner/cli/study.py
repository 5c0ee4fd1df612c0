"""`tuner study run | list | show | delete`: search a study, and read or drop what it holds."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.cli.shared import StorageOption, TrackingOption, console, errors, score_text
from tuner.core.errors import TunerError


def study_run(
    study_file: Path = typer.Argument(..., help="a study file, e.g. studies/breast-cancer.yaml"),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="the study's total trial budget (a rerun adds up to it)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="stop starting trials after this many seconds"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="worker processes sharing the study"),
    storage: Optional[str] = StorageOption,
    tracking_uri: Optional[str] = TrackingOption,
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU index(es) this worker may use, e.g. 0 or 0,1 "
                                      "(sets CUDA_VISIBLE_DEVICES; run one worker per GPU)"),
    heartbeat: Optional[int] = typer.Option(None, "--heartbeat", min=1, help="seconds between a running trial's "
                                            "heartbeats; a worker silent for 4 beats is presumed dead and its trial "
                                            "re-run [default: $TUNER_HEARTBEAT_S or 30]"),
) -> None:
    """Launch a study, or resume it with the same command; the test split stays sealed.

    Several processes (or machines) given the same study file and storage join one study.
    """
    if gpu is not None:  # before TensorFlow is imported by anything
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if heartbeat is not None:
        os.environ["TUNER_HEARTBEAT_S"] = str(heartbeat)
    from tuner.pipeline.study_run import run_study
    from tuner.search.workers import interrupt_on_signals

    interrupt_on_signals()

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[best]}"), TimeElapsedColumn(), console=console,
                  transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task("trials", total=None, best="")

        last_line = [""]

        def show(progress) -> None:
            best = (f"best {progress.score_name} {progress.best:.4f} ({progress.best_family})"
                    if progress.best is not None else "")
            bar.update(task, completed=progress.done, total=progress.total, best=best)
            line = f"trial {progress.done}/{progress.total} {best}"
            if not console.is_terminal and line != last_line[0]:
                console.print(line)
                last_line[0] = line

        try:
            result = run_study(study_file, storage, tracking_uri, trials, timeout, jobs, on_progress=show)
        except KeyboardInterrupt:
            errors.print(f"interrupted: finished trials are kept, the running one is marked and queued again; "
                         f"resume with: tuner {resume_arguments(sys.argv, study_file)}", soft_wrap=True)
            raise typer.Exit(130) from None
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
    console.print(f"[bold]{result.study_name}[/]: {states} ({result.ran} this run, {result.elapsed_s:.0f}s)")
    if result.best_value is not None:
        console.print(f"best {result.score_name} = {result.best_value:.4f}: trial {result.best_trial} ({result.best_family})")
    if result.tracking_degraded:
        errors.print("warning: MLflow tracking was degraded during this run; Optuna kept every trial")
    if result.best_value is None:
        raise TunerError("; ".join(result.family_failures) if result.family_failures
                         else f"no trial completed; first error: {result.first_error or 'none recorded'}")
    for line in result.family_failures:
        errors.print(f"warning: {line}", soft_wrap=True)
    console.print(f"next: tuner study show {result.study_name}   |   tuner ui")


def resume_arguments(argv: list[str], study_file: Path) -> str:
    """The arguments that rerun this command, with any password in a URL hidden (the terminal may be logged)."""
    from tuner.study.storage import redact_url

    if Path(argv[0]).name not in ("tuner", "__main__.py"):
        return f"study run {study_file}"
    return " ".join(redact_url(argument) for argument in argv[1:])


def study_list(storage: Optional[str] = StorageOption) -> None:
    """Studies in the storage: trials as the budget counts them, best search score (val_ or cv_, never test)."""
    from tuner.study.catalog import list_studies

    rows = list_studies(storage)
    if not rows:
        console.print("no studies yet: tuner study run studies/breast-cancer.yaml")
        return
    table = Table("study", "data", "trials", "metric", "best search score (val_ / cv_)", "started")
    for row in rows:
        best = "-" if row["best"] is None else f"{row['score_name']} {row['best']:.4f}"
        table.add_row(row["name"], row["data"], str(row["trials"]), f"{row['metric']} ({row['direction'][:3]})",
                      best, f"{row['started']:%Y-%m-%d %H:%M}" if row["started"] else "-")
    console.print(table)


def study_show(name: str = typer.Argument(..., help="study name"), storage: Optional[str] = StorageOption) -> None:
    """Leaderboard by family, best params, trials by state."""
    from tuner.study.catalog import describe_study

    report = describe_study(name, storage)
    split = ", ".join(f"{k} {v}" for k, v in report.split_counts.items() if v or k != "val")
    sealed = "test and holdout sealed" if "holdout" in report.split_counts else "test sealed"
    console.print(f"[bold]{report.name}[/]  {report.data}  {report.task}  metric {report.metric} ({report.direction})  "
                  f"rows: {split} ({sealed})")
    if report.folds:
        console.print(f"search score {report.score_name}: the mean over {report.folds}")
    if report.chosen_families:
        console.print(report.chosen_families, markup=False, soft_wrap=True)
    if report.holdout_budget:
        console.print(f"reusable holdout (tuner study holdout): {report.holdout_budget}")
    table = Table("family", "trials", "complete", "pruned", "failed", f"best {report.score_name}", "trial", "mean s",
                  title=f"leaderboard by family ({report.score_name}; the test split is not looked at)")
    for row in report.families:
        table.add_row(row.family, str(row.trials), str(row.complete), str(row.pruned), str(row.failed),
                      score_text(row.best_value), "-" if row.best_trial is None else str(row.best_trial),
                      "-" if row.mean_seconds is None else f"{row.mean_seconds:.1f}")
    console.print(table)
    uncounted = ", ".join(f"{n} {why}" for why, n in sorted(report.not_counted.items()))
    console.print("trials by state: " + ", ".join(f"{s.lower()} {n}" for s, n in sorted(report.states.items()))
                  + (f" (not counted toward the budget: {uncounted})" if uncounted else ""))
    if report.best_trial is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.best_params.items())
        console.print(f"best: trial {report.best_trial} ({report.best_family}) {report.score_name} "
                      f"{report.best_value:.4f}\n  {params}")
    if report.test_looks:
        unnamed = report.test_looks - len(report.test_lookers)  # looks taken before tuner named them
        by = ([f"{unnamed} unnamed"] if unnamed > 0 else []) + report.test_lookers
        console.print(f"test looks: {report.test_looks} ({', '.join(by)}); each one read the sealed test rows")
    if report.finalize:
        final = report.finalize
        winner = final["rows"][0]
        console.print(f"finalized at test look {final['test_looks']}: trial {winner['trial']} test_{report.metric} "
                      f"{winner['test']:.4f}")


def study_delete(name: str = typer.Argument(...), storage: Optional[str] = StorageOption,
                 yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Delete a study from Optuna storage (its MLflow runs stay)."""
    from tuner.study.catalog import delete_study

    if not yes and not typer.confirm(f"delete study {name!r} and all its trials?"):
        raise typer.Exit(1)
    delete_study(name, storage)
    console.print(f"deleted study {name}")
