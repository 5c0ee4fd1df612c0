"""`tuner export` and `tuner predict`: a built blend becomes an MLflow model, and the model predicts a file.

`tuner predict` starts fast: its imports stay inside it (tests/serve/test_startup.py).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuner.cli.shared import EXIT, RootOption, StorageOption, TrackingOption, console, errors, trained_on_text


class Refit(str, Enum):
    bag = "bag"
    single = "single"
    none = "none"


def export(name: str = typer.Argument(..., help="a built ensemble (`tuner ensemble build NAME`)"),
           blend: Optional[str] = typer.Option(None, "--blend", help="which built blend [default: the one the build chose]"),
           out: Optional[Path] = typer.Option(None, "--out", help="model folder [default: ROOT/NAME]"),
           refit: Refit = typer.Option(Refit.bag, "--refit", help="train the blend's members again on every row, the "
                                       "sealed test rows included: a K-fold bag each (bag), one model each (single), "
                                       "or export the blend as scored (none)"),
           root: Optional[Path] = RootOption,
           storage: Optional[str] = StorageOption,
           tracking_uri: Optional[str] = TrackingOption) -> None:
    """Export a built blend as an MLflow pyfunc model; log it, register a new version, alias it champion."""
    from tuner.serve.export import export_ensemble

    try:
        with console.status(f"exporting {name}") as status:
            result = export_ensemble(name, blend, out, tracking_uri, root, refit.value, storage, status.update)
    except KeyboardInterrupt:
        errors.print("interrupted: nothing was exported; an earlier export and the registry are unchanged")
        raise typer.Exit(130)
    manifest, published = result.manifest, result.published
    scores = ", ".join(f"{k} {v:.4f}" for k, v in manifest["scores"].items())
    console.print(f"exported blend [bold]{result.blend}[/] of {name} ({len(manifest['members'])} members) "
                  f"to {result.folder}" + (f": {scores}" if scores else ""))
    console.print(f"trained on {trained_on_text(manifest['trained_on'])}")
    console.print(f"registered {published.uri} (alias @champion) from MLflow run {published.run_id}")
    console.print(f"next: tuner predict {result.folder} data.csv   |   "
                  f"mlflow models serve -m {result.folder} --env-manager local -h 127.0.0.1 -p 5001", soft_wrap=True)


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
    for warning in result.warnings:
        errors.print(f"warning: {warning}", soft_wrap=True)
    if output is not None:
        console.print(f"wrote {len(result.frame)} predictions to {output}")
        return
    table = Table(*map(str, result.frame.columns))
    for row in result.frame.head(show).itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
    if len(result.frame) > show:
        console.print(f"{show} of {len(result.frame)} rows shown; -o predictions.csv writes them all")
