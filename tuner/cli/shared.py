"""What every command shares: the Rich consoles, the store options, and what `main` may skip at exit."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

StorageOption = typer.Option(None, "--storage", help="Optuna storage URL [default: $TUNER_STORAGE or sqlite:///studies/optuna.db]")
TrackingOption = typer.Option(None, "--tracking-uri", help="MLflow tracking URI [default: $TUNER_TRACKING_URI or sqlite:///mlruns/mlflow.db]")
RootOption = typer.Option(None, "--root", help="where built ensembles (ROOT/.built/NAME) and exports (ROOT/NAME) live "
                          "[default: $TUNER_ENSEMBLES or ./ensembles]")


class ExitPlan:
    """Whether the finished command left no store open, so `main` may skip the collector's last pass.

    Only `tuner predict` says so: it opens no database, and its output file is closed when it returns.
    A command with SQLite stores open keeps the pass, which closes them (and folds their WAL files).
    """

    holds_no_store = False


EXIT = ExitPlan()


def score_text(value: float | None) -> str:
    """A score to four places, or "-" where there is none."""
    return "-" if value is None else f"{value:.4f}"


def trained_on_text(trained_on: dict) -> str:
    """Which rows trained an export, and what its scores describe, in one line."""
    if trained_on.get("includes_test_rows"):
        return f"{trained_on['description']}; {trained_on['scores']}"
    why = f" ({trained_on['why']})" if trained_on.get("why") else ""
    return trained_on["description"] + why
