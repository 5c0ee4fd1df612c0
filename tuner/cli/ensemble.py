"""`tuner ensemble build | show`: blend the members of one or more studies, and show a built blend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuner.cli.shared import (RootOption, StorageOption, TrackingOption, console, errors, score_text,
                             trained_on_text)


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
    print_build(record)
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


def ensemble_show(name: str = typer.Argument(..., help="the ensemble's name"), root: Optional[Path] = RootOption) -> None:
    """The blends, members and verdict of a built ensemble, and which rows trained its export."""
    import json

    from tuner.ensemble.store import ensembles_root, read_build
    from tuner.serve.export import MANIFEST

    build = read_build(name, root)
    print_build(build)
    manifest = ensembles_root(root) / name / MANIFEST
    if manifest.is_file():
        exported = json.loads(manifest.read_text())
        if exported.get("built_at") == build.get("built_at") and "trained_on" in exported:
            console.print(f"export {manifest.parent} (blend {exported['blend']}): trained on "
                          f"{trained_on_text(exported['trained_on'])}", soft_wrap=True)


def print_build(record: dict) -> None:
    """A build's members and blends, as `ensemble build`, `ensemble show` and `run-all` print them."""
    m = record["metric"]
    blends = Table("blend", f"oof_{m}", f"test_{m}", "test SE", "test vs best single (paired SE)", "gap (oof - test)",
                   "members", title=f"ensemble {record['name']}: blends (chosen by oof_{m}, never by test)")
    single = record["blends"]["best_single"]["test"]
    for blend, row in record["blends"].items():
        blends.add_row(f"[bold]{blend} (chosen)[/]" if blend == record["chosen"] else blend, score_text(row["oof"]),
                       score_text(row["test"]), score_text(row["test_se"]),
                       f"{row['test'] - single:+.4f} ({row['test_difference_se']:.4f})",
                       f"{row['oof'] - row['test']:+.4f}", str(len(row["members"])))
    members = Table("member", "steps", f"val_{m}", f"oof_{m}", f"test_{m}", "test SE", "weight",
                    title=f"members ({record['folds']}-fold out of fold on {record['rows']['oof']} rows; "
                          f"test on {record['rows']['test']} sealed rows)")
    for row in record["members"]:
        members.add_row(row["label"], "-" if row["steps"] is None else str(row["steps"]), score_text(row["val"]),
                        score_text(row["oof"]), score_text(row["test"]), score_text(row["test_se"]), f"{row['weight']:.3f}")
    console.print(members)
    console.print(blends)
    for dropped in record["dropped"]:
        console.print(f"dropped {dropped['dropped']}: oof correlation {dropped['correlation']:.3f} with "
                      f"{dropped['kept']} (kept, better oof_{m})")
    for line in record.get("verdict", []):
        console.print(line)
