"""`tuner run-all`: search, ensemble, one test look (finalize's and the ensemble's) and export in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuner.cli.ensemble import print_build
from tuner.cli.evaluate import print_finalize
from tuner.cli.shared import EXIT, RootOption, StorageOption, TrackingOption, console, errors, trained_on_text


def run_all(
    study_file: Path = typer.Argument(..., help="a study file, e.g. studies/breast-cancer.yaml"),
    budget: Optional[float] = typer.Option(None, "--budget", min=10, help="seconds for everything: search, finalize, "
                                           "ensemble, export [default: the study file's trial budget, no time limit]"),
    force: bool = typer.Option(False, "--force", help="look at the test split again if the study changed (counted)"),
    root: Optional[Path] = RootOption,
    storage: Optional[str] = StorageOption,
    tracking_uri: Optional[str] = TrackingOption,
) -> None:
    """Search, ensemble, score the finalists and blends in one test look, and export a study in one command."""
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
    for line in run.family_failures:
        errors.print(f"warning: {line}", soft_wrap=True)
    print_finalize(result.finalize)
    for stage, why in result.skipped.items():
        console.print(f"[bold]{stage}[/]: skipped: {why}", soft_wrap=True)
    print_build(result.build)
    from tuner.ensemble.store import ensembles_root

    model = ensembles_root(root) / result.build["name"]
    if result.export is not None:
        console.print(f"exported blend [bold]{result.export.blend}[/] to {result.export.folder}; registered "
                      f"{result.export.published.uri} (alias @champion); trained on "
                      f"{trained_on_text(result.export.manifest['trained_on'])}", soft_wrap=True)
    if result.reused:
        console.print(f"shown from the earlier run (no new test look): {', '.join(result.reused)}")
    timing = ", ".join(f"{stage} {s:.0f} s" + (f" ({result.stage_cores[stage]:.1f} cores)" if stage in result.stage_cores
                                                 else "") for stage, s in result.stage_seconds.items())
    console.print(f"time: {timing}" + (f" (budget {budget:.0f} s)" if budget else ""))
    console.print(f"next: tuner ui   |   tuner report {run.study_name}   |   tuner predict {model} data.csv",
                  soft_wrap=True)
    from tuner.study.storage import resolve_storage_url
    from tuner.tracking import resolve_tracking_uri

    EXIT.fast_exit_stores = [resolve_storage_url(storage), resolve_tracking_uri(tracking_uri)]
