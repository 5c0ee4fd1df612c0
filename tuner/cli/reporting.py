"""`tuner study plots` and `tuner report`: a study's plots and its HTML page, logged to its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuner.cli.shared import StorageOption, TrackingOption, console


def study_plots(name: str = typer.Argument(..., help="study name"), storage: Optional[str] = StorageOption,
                tracking_uri: Optional[str] = TrackingOption) -> None:
    """Redraw the study's plots and log them to its MLflow parent run (folder plots/); tag the best run."""
    from tuner.reporting.dashboard import refresh_plots

    plots, run_id = refresh_plots(name, storage, tracking_uri)
    console.print(f"logged {len(plots.images)} plots to MLflow run {run_id} under plots/: "
                  + ", ".join(p.removeprefix("plots/") for p in plots.images))
    for note in plots.notes:
        console.print(f"  skipped: {note}")


def report(name: str = typer.Argument(..., help="study name"),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file [default: NAME-report.html]"),
           storage: Optional[str] = StorageOption, tracking_uri: Optional[str] = TrackingOption) -> None:
    """Write the study's report as one self-contained HTML page and log it to its MLflow parent run."""
    from tuner.reporting.dashboard import write_report

    path, run_id = write_report(name, output, storage, tracking_uri)
    console.print(f"wrote {path} and logged it as report.html on MLflow run {run_id}")
