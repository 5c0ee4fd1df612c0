"""The `tuner` command: parses, calls the library, prints with Rich. No logic of its own.

Over 400 lines because every command's options and output live here, one short function each.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.core.errors import TunerError

app = typer.Typer(help="Honest hyperparameter search and ensembling for the models of Deep Learning with Python.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
study_app = typer.Typer(help="Run, inspect and delete studies.", no_args_is_help=True)
app.add_typer(study_app, name="study")
ensemble_app = typer.Typer(help="Blend the members of one or more studies.", no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

StorageOption = typer.Option(None, "--storage", help="Optuna storage URL [default: $TUNER_STORAGE or sqlite:///studies/optuna.db]")
TrackingOption = typer.Option(None, "--tracking-uri", help="MLflow tracking URI [default: $TUNER_TRACKING_URI or sqlite:///mlruns/mlflow.db]")


class ExitPlan:
    """Whether the finished command left no store open, so `main` may skip the collector's last pass.

    Only `tuner predict` says so: it opens no database, and its output file is closed when it returns.
    A command with SQLite stores open keeps the pass, which closes them (and folds their WAL files).
    """

    holds_no_store = False


EXIT = ExitPlan()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@study_app.command("run")
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
    ran = sum(result.counts.values()) - result.trials_before
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
    console.print(f"[bold]{result.study_name}[/]: {states} ({ran} this run, {result.elapsed_s:.0f}s)")
    if result.best_value is not None:
        console.print(f"best {result.score_name} = {result.best_value:.4f}: trial {result.best_trial} ({result.best_family})")
    if result.tracking_degraded:
        errors.print("warning: MLflow tracking was degraded during this run; Optuna kept every trial")
    if result.best_value is None:
        raise TunerError(f"no trial completed; first error: {result.first_error or 'none recorded'}")
    console.print(f"next: tuner study show {result.study_name}   |   tuner ui")


def resume_arguments(argv: list[str], study_file: Path) -> str:
    """The arguments that rerun this command, with any password in a URL hidden (the terminal may be logged)."""
    from tuner.study.storage import redact_url

    if Path(argv[0]).name not in ("tuner", "__main__.py"):
        return f"study run {study_file}"
    return " ".join(redact_url(argument) for argument in argv[1:])


@study_app.command("list")
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


@study_app.command("show")
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
    if report.holdout_budget:
        console.print(f"reusable holdout (tuner study holdout): {report.holdout_budget}")
    table = Table("family", "trials", "complete", "pruned", "failed", f"best {report.score_name}", "trial", "mean s",
                  title=f"leaderboard by family ({report.score_name}; the test split is not looked at)")
    for row in report.families:
        table.add_row(row.family, str(row.trials), str(row.complete), str(row.pruned), str(row.failed),
                      _fmt(row.best_value), "-" if row.best_trial is None else str(row.best_trial),
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


@study_app.command("finalize")
def study_finalize(
    name: str = typer.Argument(..., help="study name"),
    top: int = typer.Option(5, "--top", min=1, help="configurations to refit and score (plus the best of each family)"),
    force: bool = typer.Option(False, "--force", help="look at the test split again (counted and shown)"),
    study_file: Optional[Path] = typer.Option(None, "--study-file", help="the study's file, if its data moved"),
    storage: Optional[str] = StorageOption,
    tracking_uri: Optional[str] = TrackingOption,
) -> None:
    """Refit the top configurations on train + val and score them once on the sealed test split."""
    from tuner.evaluate.finalize import finalize_study

    with console.status("refitting the finalists on every search row and scoring the sealed test split"):
        report = finalize_study(name, storage, tracking_uri, top, force, str(study_file) if study_file else None)
    _print_finalize(report)


def _print_finalize(report) -> None:
    from tuner.evaluate.finalize import interval_text, search_score_name

    m, s = report.metric, search_score_name(report)
    table = Table(f"{s} rank", "family", "trial", s, f"test_{m}", f"test_{m} 95% interval", f"optimism ({s} - test)",
                  f"test_{m} rank", title=f"{report.study}: test look {report.test_looks} ({report.rows_test} sealed test rows)")
    for r in report.rows:
        table.add_row(str(r.val_rank), r.family, str(r.trial), f"{r.val:.4f}", f"{r.test:.4f}",
                      interval_text(r.test_low, r.test_high), f"{r.optimism:+.4f}", str(r.test_rank))
    console.print(table)
    winner = report.winner
    console.print(f"winner: trial {winner.trial} ({winner.family}) {s} {winner.val:.4f} -> test_{m} "
                  f"{winner.test:.4f}: validation flattered it by {winner.optimism:+.4f}")
    rho = "n/a" if report.spearman is None else f"{report.spearman:.2f}"
    console.print(f"{s} / test_{m} rank correlation (Spearman) over {len(report.rows)} finalists: {rho}; "
                  f"expected {s} optimism of the best of {report.trials_complete} trials: "
                  f"~{report.expected_selection_optimism:.4f}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


@study_app.command("holdout")
def study_holdout(
    name: str = typer.Argument(..., help="study name"),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="ask about the best K trials by search score [default: 3]"),
    trials: Optional[str] = typer.Option(None, "--trials", help="ask about these trial numbers, e.g. 3,7"),
    study_file: Optional[Path] = typer.Option(None, "--study-file", help="the study's file, if its data moved"),
    storage: Optional[str] = StorageOption,
) -> None:
    """Score finalists on the reusable holdout through Thresholdout (noised, budgeted; the test split stays sealed)."""
    from tuner.evaluate.holdout import HoldoutBudgetSpent, query_holdout

    if top is not None and trials:
        raise TunerError("give --top or --trials, not both")
    numbers = None
    if trials:
        try:
            numbers = [int(n) for n in trials.split(",") if n.strip()]
        except ValueError:
            raise TunerError(f"--trials {trials!r} is not a comma-separated list of trial numbers, e.g. 3,7") from None
    with console.status("refitting the chosen configurations and asking the reusable holdout"):
        report = query_holdout(name, storage, top, numbers, str(study_file) if study_file else None)
    m, s = report.metric, report.score_name
    table = Table("trial", "family", s, f"holdout_{m} (thresholdout)", "answered from",
                  title=f"{report.study}: reusable holdout ({report.rows_holdout} sealed holdout rows)")
    for row in report.rows:
        source = "-" if row.answer is None else ("holdout (noised, 1 budget)" if row.from_holdout else f"{s} (agreed)")
        table.add_row(str(row.trial), row.family, f"{row.search_score:.4f}", _fmt(row.answer), source)
    console.print(table)
    console.print(f"holdout budget left: {report.budget_left} of {report.budget} ({report.queries} queries so far)")
    if report.exhausted:
        raise HoldoutBudgetSpent(f"the reusable holdout's budget ran out: {sum(r.answer is None for r in report.rows)} "
                                 "trial(s) above were not answered; use `tuner study finalize` for the one test look")


@study_app.command("delete")
def study_delete(name: str = typer.Argument(...), storage: Optional[str] = StorageOption,
                 yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Delete a study from Optuna storage (its MLflow runs stay)."""
    from tuner.study.catalog import delete_study

    if not yes and not typer.confirm(f"delete study {name!r} and all its trials?"):
        raise typer.Exit(1)
    delete_study(name, storage)
    console.print(f"deleted study {name}")


@study_app.command("plots")
def study_plots(name: str = typer.Argument(..., help="study name"), storage: Optional[str] = StorageOption,
                tracking_uri: Optional[str] = TrackingOption) -> None:
    """Redraw the study's plots and log them to its MLflow parent run (folder plots/); tag the best run."""
    from tuner.reporting.dashboard import refresh_plots

    plots, run_id = refresh_plots(name, storage, tracking_uri)
    console.print(f"logged {len(plots.images)} plots to MLflow run {run_id} under plots/: "
                  + ", ".join(p.removeprefix("plots/") for p in plots.images))
    for note in plots.notes:
        console.print(f"  skipped: {note}")


@app.command("report")
def report(name: str = typer.Argument(..., help="study name"),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file [default: NAME-report.html]"),
           storage: Optional[str] = StorageOption, tracking_uri: Optional[str] = TrackingOption) -> None:
    """Write the study's report as one self-contained HTML page and log it to its MLflow parent run."""
    from tuner.reporting.dashboard import write_report

    path, run_id = write_report(name, output, storage, tracking_uri)
    console.print(f"wrote {path} and logged it as report.html on MLflow run {run_id}")


RootOption = typer.Option(None, "--root", help="where built ensembles (ROOT/.built/NAME) and exports (ROOT/NAME) live "
                          "[default: $TUNER_ENSEMBLES or ./ensembles]")


@app.command("export")
def export(name: str = typer.Argument(..., help="a built ensemble (`tuner ensemble build NAME`)"),
           blend: Optional[str] = typer.Option(None, "--blend", help="which built blend [default: the one the build chose]"),
           out: Optional[Path] = typer.Option(None, "--out", help="model folder [default: ROOT/NAME]"),
           root: Optional[Path] = RootOption,
           tracking_uri: Optional[str] = TrackingOption) -> None:
    """Export a built blend as an MLflow pyfunc model; log it, register a new version, alias it champion."""
    from tuner.serve.export import export_ensemble

    try:
        with console.status(f"exporting {name}"):
            result = export_ensemble(name, blend, out, tracking_uri, root)
    except KeyboardInterrupt:
        errors.print("interrupted: nothing was exported; an earlier export and the registry are unchanged")
        raise typer.Exit(130)
    manifest, published = result.manifest, result.published
    scores = ", ".join(f"{k} {v:.4f}" for k, v in manifest["scores"].items())
    console.print(f"exported blend [bold]{result.blend}[/] of {name} ({len(manifest['members'])} members) "
                  f"to {result.folder}" + (f": {scores}" if scores else ""))
    console.print(f"registered {published.uri} (alias @champion) from MLflow run {published.run_id}")
    console.print(f"next: tuner predict {result.folder} data.csv   |   "
                  f"mlflow models serve -m {result.folder} --env-manager local -h 127.0.0.1 -p 5001", soft_wrap=True)


@app.command("predict")
def predict(model: Path = typer.Argument(..., help="an exported model folder, e.g. ensembles/NAME"),
            data: Path = typer.Argument(..., help=".csv or .parquet with the columns the model was trained on"),
            output: Optional[Path] = typer.Option(None, "-o", "--output", help="write every prediction (.csv or .parquet)"),
            show: int = typer.Option(10, "--show", min=1, help="rows printed when there is no -o")) -> None:
    """Predict every row of a CSV or Parquet file with an exported model (columns checked first)."""
    from tuner.serve.predict import predict_file

    result = predict_file(model, data, output)
    EXIT.holds_no_store = True
    for note in result.notes:
        errors.print(f"note: {note}")
    if output is not None:
        console.print(f"wrote {len(result.frame)} predictions to {output}")
        return
    table = Table(*map(str, result.frame.columns))
    for row in result.frame.head(show).itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
    if len(result.frame) > show:
        console.print(f"{show} of {len(result.frame)} rows shown; -o predictions.csv writes them all")


@ensemble_app.command("build")
def ensemble_build(
    name: str = typer.Argument(..., help="the ensemble's name (a folder under ROOT/.built/)"),
    studies: list[str] = typer.Option(..., "--from", help="a study to take members from (repeat for several)"),
    per_family: int = typer.Option(2, "--per-family", min=1, help="best complete trials taken from each family"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds of the out-of-fold predictions"),
    correlation: float = typer.Option(0.98, "--correlation", help="drop a member correlating above this with a better one"),
    refit: bool = typer.Option(False, "--refit", help="K-fold study: refit each picked member on every search row "
                                                      "instead of averaging its fold models (one fit each, timed)"),
    root: Optional[Path] = RootOption,
    storage: Optional[str] = StorageOption,
    tracking_uri: Optional[str] = TrackingOption,
) -> None:
    """Blend trials out of fold (a K-fold study: over every trial's stored predictions, nothing refitted),
    score the sealed test split once."""
    from tuner.ensemble.build import BuildInterrupted, build_ensemble

    try:
        with console.status("gathering candidates") as status:
            record = build_ensemble(name, studies, storage, tracking_uri, per_family, folds, correlation, root,
                                    on_step=lambda message: (status.update(message),
                                                             None if console.is_terminal else console.print(message)),
                                    refit=refit)
    except BuildInterrupted as stop:
        _print_build_interrupted(name, studies, stop.test_looks)
        raise typer.Exit(130) from None
    _print_build(record)
    if record.get("refit_seconds") is not None:
        console.print(f"refit: {len(record['members'])} member(s) refitted on every search row in "
                      f"{record['refit_seconds']:.1f} s (instead of averaging their fold models)")
    console.print(f"stored in {record['path']}; MLflow run ensemble/{name} ({record['tracking_run_id']})")


def _print_build_interrupted(name: str, studies: list[str], test_looks: dict[str, int]) -> None:
    """What a Ctrl-C kept: never a build, sometimes a counted test look."""
    typed = " ".join(sys.argv[1:]) if Path(sys.argv[0]).name in ("tuner", "__main__.py") else ""
    rerun = typed or f"ensemble build {name} " + " ".join(f"--from {study}" for study in studies)
    if test_looks:
        looks = ", ".join(f"{study}: {n} test look(s)" for study, n in test_looks.items())
        looked = f"after the sealed test split was looked at: that look stays counted ({looks})"
    else:
        looked = "before the sealed test split was looked at: no test look was counted"
    errors.print(f"interrupted {looked}; nothing was stored (any earlier build of {name} is kept, the studies' "
                 f"trials are untouched); rebuild with: tuner {rerun}", soft_wrap=True)


@ensemble_app.command("show")
def ensemble_show(name: str = typer.Argument(..., help="the ensemble's name"), root: Optional[Path] = RootOption) -> None:
    """The blends, members and verdict of a built ensemble."""
    from tuner.ensemble.store import read_build

    _print_build(read_build(name, root))


def _print_build(record: dict) -> None:
    m = record["metric"]
    blends = Table("blend", f"oof_{m}", f"test_{m}", "test SE", "test vs best single (paired SE)", "gap (oof - test)",
                   "members", title=f"ensemble {record['name']}: blends (chosen by oof_{m}, never by test)")
    single = record["blends"]["best_single"]["test"]
    for blend, row in record["blends"].items():
        blends.add_row(f"[bold]{blend} (chosen)[/]" if blend == record["chosen"] else blend, _fmt(row["oof"]),
                       _fmt(row["test"]), _fmt(row["test_se"]),
                       f"{row['test'] - single:+.4f} ({row['test_difference_se']:.4f})",
                       f"{row['oof'] - row['test']:+.4f}", str(len(row["members"])))
    members = Table("member", "steps", f"val_{m}", f"oof_{m}", f"test_{m}", "test SE", "weight",
                    title=f"members ({record['folds']}-fold out of fold on {record['rows']['oof']} rows; "
                          f"test on {record['rows']['test']} sealed rows)")
    for row in record["members"]:
        members.add_row(row["label"], "-" if row["steps"] is None else str(row["steps"]), _fmt(row["val"]),
                        _fmt(row["oof"]), _fmt(row["test"]), _fmt(row["test_se"]), f"{row['weight']:.3f}")
    console.print(members)
    console.print(blends)
    for dropped in record["dropped"]:
        console.print(f"dropped {dropped['dropped']}: oof correlation {dropped['correlation']:.3f} with "
                      f"{dropped['kept']} (kept, better oof_{m})")
    for line in record.get("verdict", []):
        console.print(line)


@app.command("run-all")
def run_all(
    study_file: Path = typer.Argument(..., help="a study file, e.g. studies/breast-cancer.yaml"),
    budget: Optional[float] = typer.Option(None, "--budget", min=10, help="seconds for everything: search, finalize, "
                                           "ensemble, export [default: the study file's trial budget, no time limit]"),
    force: bool = typer.Option(False, "--force", help="look at the test split again if the study changed (counted)"),
    root: Optional[Path] = RootOption,
    storage: Optional[str] = StorageOption,
    tracking_uri: Optional[str] = TrackingOption,
) -> None:
    """Search, finalize (one test look), ensemble and export a study in one command."""
    import psutil

    from tuner.pipeline.run_all import run_all as run_everything
    from tuner.search.workers import interrupt_on_signals

    interrupt_on_signals()
    try:
        with console.status("searching") as status:
            result = run_everything(study_file, budget, storage, tracking_uri, root, force,
                                    on_step=lambda message: (status.update(message),
                                                             None if console.is_terminal else console.print(message)),
                                    started_at=psutil.Process().create_time())  # the budget counts start-up
    except KeyboardInterrupt:
        errors.print(f"interrupted: finished work is kept; resume with: tuner run-all {study_file}", soft_wrap=True)
        raise typer.Exit(130) from None
    run = result.run
    console.print(f"[bold]search[/]: {result.trials} trials, best {run.score_name} {run.best_value:.4f} "
                  f"(trial {run.best_trial}, {run.best_family})")
    if result.finalize is not None:
        _print_finalize(result.finalize)
    for stage, why in result.skipped.items():
        console.print(f"[bold]{stage}[/]: skipped: {why}", soft_wrap=True)
    _print_build(result.build)
    from tuner.ensemble.store import ensembles_root

    model = ensembles_root(root) / result.build["name"]
    if result.export is not None:
        console.print(f"exported blend [bold]{result.export.blend}[/] to {result.export.folder}; registered "
                      f"{result.export.published.uri} (alias @champion)")
    if result.reused:
        console.print(f"shown from the earlier run (no new test look): {', '.join(result.reused)}")
    timing = ", ".join(f"{stage} {s:.0f} s" for stage, s in result.stage_seconds.items())
    console.print(f"time: {timing}" + (f" (budget {budget:.0f} s)" if budget else ""))
    console.print(f"next: tuner ui   |   tuner report {run.study_name}   |   tuner predict {model} data.csv",
                  soft_wrap=True)


@app.command("datasets")
def datasets() -> None:
    """The built-in datasets (`data: {source: builtin:NAME}`)."""
    from tuner.data import BUILTINS

    table = Table("source", "what")
    for name, what in BUILTINS.items():
        table.add_row(f"builtin:{name}", what)
    console.print(table)
    console.print("Files: CSV or Parquet with `target: COLUMN`, or NPZ with arrays X and y.")


@app.command("ui")
def ui(tracking_uri: Optional[str] = TrackingOption, storage: Optional[str] = StorageOption,
       host: str = typer.Option("127.0.0.1", help="bind address (keep 127.0.0.1 unless you mean to share it)"),
       port: int = typer.Option(5000, help="port")) -> None:
    """Start the MLflow UI on the project's store."""
    from tuner.tracking import artifact_root_for, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]  # one local reader; MLflow's default 4 workers cost memory and start-up time
    if artifact_root_for(uri):
        command += ["--default-artifact-root", artifact_root_for(uri)]
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it")
    console.print(f"a study's runs: http://{host}:{port}/#/experiments/ID/runs?workflowType=machine_learning "
                  "(or pick 'Model training' in the sidebar; MLflow 3 opens experiments on its GenAI view)")
    if _has_optuna_dashboard():
        from tuner.study.storage import resolve_storage_url

        console.print(f"optuna-dashboard is installed too: optuna-dashboard {resolve_storage_url(storage)}",
                      soft_wrap=True)  # a command to copy: never broken across lines
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}  # GenAI job runners: 7 idle processes
    raise typer.Exit(subprocess.call(command, env=env))


@app.command("server")
def server(
    backend_store_uri: str = typer.Option("sqlite:///mlruns/mlflow.db", "--backend-store-uri",
                                          help="where runs are kept: postgresql+psycopg://USER@HOST/DB for several "
                                               "machines, or a local sqlite:///PATH"),
    artifacts_destination: Path = typer.Option(Path("mlruns/artifacts"), "--artifacts-destination",
                                               help="folder (or shared mount) for artifacts; workers upload "
                                                    "through the server, so they need no access to it"),
    host: str = typer.Option("127.0.0.1", help="bind address; 0.0.0.0 lets other machines in (use a trusted network)"),
    port: int = typer.Option(5000, help="port"),
    workers: int = typer.Option(2, "--workers", min=1, help="server worker processes"),
    allowed_hosts: Optional[str] = typer.Option(None, "--allowed-hosts", help="more Host headers to accept, "
                                                "comma-separated, wildcards allowed (always accepted: localhost, "
                                                "private IPs, this machine's name and FQDN, --host)"),
) -> None:
    """Start an MLflow tracking server for workers on several machines and print the URI they use."""
    import socket

    from tuner.tracking import WILDCARD_ADDRESSES, server_command

    if backend_store_uri.startswith("sqlite:///"):
        Path(backend_store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifacts_destination.mkdir(parents=True, exist_ok=True)
    command = server_command(backend_store_uri, artifacts_destination, host, port, workers, allowed_hosts)
    reachable = socket.gethostname() if host in WILDCARD_ADDRESSES else host
    console.print(f"MLflow tracking server: store {backend_store_uri}, artifacts {artifacts_destination.resolve()}")
    console.print(f"workers use: --tracking-uri http://{reachable}:{port}   (Ctrl-C stops the server)")
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    raise typer.Exit(subprocess.call(command, env=env))


def _has_optuna_dashboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna_dashboard") is not None


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of raising it
        if EXIT.holds_no_store:
            gc.freeze()  # the collector's last pass over pandas', scikit-learn's and XGBoost's objects: 0.4 s
    except TunerError as exc:
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # `study run` and `ensemble build` say more; every command writes atomically
        errors.print("interrupted: nothing half-written was kept; run the same command again")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors arrive here with standalone_mode=False
        from typer._click import exceptions as click_errors  # typer >= 0.26 raises its own copy of click's classes

        if isinstance(exc, click_errors.UsageError):  # one line, like every other refusal
            errors.print(f"[red]error:[/] {exc.format_message()} (see --help)", soft_wrap=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, click_errors.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.Abort):  # a declined confirmation
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
