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
    """What `main` may skip at exit once the command's work is written.

    `holds_no_store`: `tuner predict` opens no database, and its output file is closed when it
    returns, so the collector's last pass is skipped. `fast_exit_stores`: `run-all` (whose budget
    counts until the process ends) names its SQLite stores; `main` folds their write-ahead logs into
    the database files and ends the process at once, skipping 3-8 s of interpreter teardown (fold
    workers' shutdown, TensorFlow's and MLflow's objects). Every store commits as it goes, so
    nothing waits on that teardown; the fold workers end with their parent by themselves.
    """

    holds_no_store = False
    fast_exit_stores: list[str] | None = None

    def fast_exit(self, code: int) -> None:
        import logging
        import os
        import sqlite3
        from contextlib import closing

        for url in self.fast_exit_stores or []:
            if url.startswith("sqlite:///"):
                try:
                    with closing(sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0], timeout=10)) as db:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a copied .db file holds every row
                except sqlite3.Error:
                    pass  # the normal exit's last connection folds it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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
