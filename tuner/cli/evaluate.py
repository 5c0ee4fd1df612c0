"""`tuner study finalize | holdout`: the two ways a study's finalists meet rows the search never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuner.cli.shared import StorageOption, TrackingOption, console, score_text
from tuner.core.errors import TunerError


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
    print_finalize(report)


def print_finalize(report) -> None:
    """The finalists' search and test scores side by side, and how far the search flattered the winner."""
    from tuner.reporting.finalize_page import interval_text, search_score_name

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
        table.add_row(str(row.trial), row.family, f"{row.search_score:.4f}", score_text(row.answer), source)
    console.print(table)
    console.print(f"holdout budget left: {report.budget_left} of {report.budget} ({report.queries} queries so far)")
    if report.exhausted:
        raise HoldoutBudgetSpent(f"the reusable holdout's budget ran out: {sum(r.answer is None for r in report.rows)} "
                                 "trial(s) above were not answered; use `tuner study finalize` for the one test look")
