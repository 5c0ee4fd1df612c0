"""What a finalize says: the finalists' search and test scores, the validation optimism, warnings.

Pure: a finalize report (`tuner.evaluate.finalize.FinalizeReport`, or its stored record) in,
Markdown or table cells out; read by the finalize run in MLflow, the CLI and the study page.
"""

from __future__ import annotations

import math
from typing import Any


def search_score_name(record: Any) -> str:
    """The finalize report's search score (records written before K-fold existed say val_)."""
    get = record.get if isinstance(record, dict) else lambda key: getattr(record, key)
    return get("score_name") or f"val_{get('metric')}"


def interval_text(low: float, high: float) -> str:
    """A 95% interval, or n/a when the test part was too small to bootstrap one."""
    return "n/a" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]"


def render_markdown(report: Any) -> str:
    m, s = report.metric, search_score_name(report)
    lines = [
        f"# Finalize: {report.study}",
        "",
        f"Refitted on every search row ({report.rows_train + report.rows_val} rows), scored once on the sealed "
        f"test split ({report.rows_test} rows). Test look {report.test_looks}. {report.trials_complete} complete trials.",
        "",
        f"| {s} rank | family | trial | {s} | test_{m} | test_{m} 95% interval | optimism ({s} - test_{m}) | test rank |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report.rows:
        lines.append(f"| {r.val_rank} | {r.family} | {r.trial} | {r.val:.4f} | {r.test:.4f} | "
                     f"{interval_text(r.test_low, r.test_high)} | {r.optimism:+.4f} | {r.test_rank} |")
    rho = "n/a (fewer than 3 finalists)" if report.spearman is None else f"{report.spearman:.2f}"
    lines += [
        "",
        f"- Spearman rank correlation of {s} and test_{m} over the finalists: {rho}",
        f"- Standard error of a {s} on {report.rows_scored or report.rows_val} rows: about {report.val_standard_error:.4f}; "
        f"picking the best of {report.trials_complete} such scores inflates it by about "
        f"{report.expected_selection_optimism:.4f} on average",
    ]
    lines += [f"- **Warning:** {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
