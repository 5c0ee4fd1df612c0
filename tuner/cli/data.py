"""`tuner datasets`: the built-in datasets a study file may name."""

from __future__ import annotations

from rich.table import Table

from tuner.cli.shared import console


def datasets() -> None:
    """The built-in datasets (`data: {source: builtin:NAME}`)."""
    from tuner.data import BUILTINS

    table = Table("source", "what")
    for name, what in BUILTINS.items():
        table.add_row(f"builtin:{name}", what)
    console.print(table)
    console.print("Files: CSV or Parquet with `target: COLUMN`, or NPZ with arrays X and y.")
