"""Figures a person would rather look at than read; pure functions from results to matplotlib figures."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def validation_vs_test(report: Any) -> plt.Figure:
    """Each finalised configuration at (val score, test score); points below the diagonal were
    flattered by validation (for a metric to maximise)."""
    figure, axes = plt.subplots(figsize=(6, 5))
    m = report.metric
    families = sorted({r.family for r in report.rows})
    colours = dict(zip(families, plt.cm.tab10.colors))
    for row in report.rows:
        axes.errorbar(row.val, row.test, yerr=[[row.test - row.test_low], [row.test_high - row.test]],
                      fmt="o", color=colours[row.family], capsize=3, alpha=0.85)
        axes.annotate(f"#{row.trial}", (row.val, row.test), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for family, colour in colours.items():
        axes.plot([], [], "o", color=colour, label=family)
    values = [v for r in report.rows for v in (r.val, r.test_low, r.test_high)]
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or 0.01
    axes.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="grey", linewidth=1, label="val = test")
    axes.set_xlabel(f"val_{m} (the search's score)")
    axes.set_ylabel(f"test_{m} (sealed split, 95% bootstrap interval)")
    axes.set_title(f"{report.study}: validation vs sealed test ({m}, {report.direction})")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
