"""The study report: one self-contained HTML page (inline CSS, plots as base64 PNG, no external assets).

A page is a list of `Section`s, so later stages (finalize's test scores, ensembles) add their own
sections to the same page without touching these. Pure: data in, HTML text out.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from tuner.reporting.finalize_page import interval_text
from tuner.reporting.plots import PlotSet, PlotSkipped, png_bytes, validation_vs_test
from tuner.study.catalog import StudyReport

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.sub{color:#555;margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.sealed{color:#8a1c1c;font-weight:600}
figure{margin:1rem 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
.note{color:#555;font-style:italic}
"""


@dataclass(frozen=True)
class Section:
    """One titled part of the page; `body` is HTML the section's maker has already escaped."""

    title: str
    body: str


class Markup(str):
    """Text that is already HTML: `table` and `_e` leave it as it is."""


def _e(value: Any) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table; cells are escaped unless they are `Markup`."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(png: bytes, caption: str) -> str:
    """A PNG embedded in the page itself."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def study_sections(report: StudyReport, plots: PlotSet) -> list[Section]:
    """What the search stage knows: split, trials, leaderboard by family, best params, plots."""
    sealed = Markup('<span class="sealed">sealed: the search never sees these rows</span>')
    split = table(("part", "rows", ""), [(part, n, sealed if part in ("test", "holdout") else "")
                                         for part, n in report.split_counts.items() if n or part != "val"])
    if report.folds:
        split += f'<p class="note">{_e(report.score_name)}: the mean over {_e(report.folds)} of the search rows</p>'
    states = table(("state", "trials"), [(s.lower(), n) for s, n in sorted(report.states.items())])
    leaderboard = table(
        ("family", "trials", "complete", "pruned", "failed", f"best {report.score_name}", "best trial", "mean seconds"),
        [(r.family, r.trials, r.complete, r.pruned, r.failed, _fmt(r.best_value),
          "-" if r.best_trial is None else r.best_trial, "-" if r.mean_seconds is None else f"{r.mean_seconds:.1f}")
         for r in report.families])
    if report.best_trial is None:
        best = '<p class="note">no trial has completed yet</p>'
    else:
        best = (f"<p>trial {report.best_trial} ({_e(report.best_family)}), {_e(report.score_name)} "
                f"{_fmt(report.best_value)}</p>"
                + table(("parameter", "value"), [(k, f"{v:.4g}" if isinstance(v, float) else v)
                                                 for k, v in report.best_params.items()]))
    figures = "".join(image(png, path.removeprefix("plots/").removesuffix(".png").replace("_", " "))
                      for path, png in plots.images.items())
    notes = "".join(f'<p class="note">skipped: {_e(n)}</p>' for n in plots.notes)
    return [
        Section("Split", split),
        Section("Trials by state", states),
        Section(f"Leaderboard by family ({report.score_name}; the test split is not looked at)", leaderboard),
        Section("Best trial", best),
        Section("Plots", figures + notes),
    ]


def finalize_section(record: dict[str, Any]) -> Section:
    """`study finalize`'s record (the study's `tuner.evaluate.finalize` attribute): search score against test, once."""
    m = record["metric"]
    s = record.get("score_name") or f"val_{m}"
    rows = record["rows"]
    intro = (f"<p>Refitted on every search row ({record['rows_train'] + record['rows_val']} rows) and scored on the "
             f"sealed test split ({record['rows_test']} rows); test look {record['test_looks']}, "
             f"{record['trials_complete']} complete trials, finalized {_e(record.get('finished_at', ''))}.</p>")
    scores = table(
        (f"{s} rank", "family", "trial", s, f"test_{m}", f"test_{m} 95% interval", f"optimism ({s} - test_{m})",
         f"test_{m} rank"),
        [(r["val_rank"], r["family"], r["trial"], _fmt(r["val"]), _fmt(r["test"]),
          interval_text(r["test_low"], r["test_high"]), f"{r['optimism']:+.4f}", r["test_rank"]) for r in rows])
    rho = "n/a (fewer than 3 finalists)" if record.get("spearman") is None else f"{record['spearman']:.2f}"
    facts = (f"<ul><li>Spearman rank correlation of {_e(s)} and test_{_e(m)} over the finalists: {rho}</li>"
             f"<li>standard error of one {_e(s)}: about {record['val_standard_error']:.4f}; picking the best of "
             f"{record['trials_complete']} inflates it by about {record['expected_selection_optimism']:.4f}</li></ul>")
    warnings = "".join(f'<p class="sealed">warning: {_e(w)}</p>' for w in record.get("warnings", []))
    points = {f"#{r['trial']} {r['family']}": (r["val"], r["test"]) for r in rows}
    try:
        scatter = image(png_bytes(validation_vs_test(points, m, s)), f"{s} against test_{m} of the finalists")
    except PlotSkipped as note:
        scatter = f'<p class="note">skipped: {_e(note)}</p>'
    return Section(f"Finalize: {s} against the sealed test split (test_{m})", intro + scores + facts + warnings + scatter)


def render_page(title: str, subtitle: str, sections: Iterable[Section]) -> str:
    """The whole page; every section becomes an <h2> and its body."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = "".join(f"<section><h2>{_e(s.title)}</h2>{s.body}</section>" for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
            f'<p class="sub">{_e(subtitle)} &middot; generated {generated}</p>{parts}</body></html>')


def study_page(report: StudyReport, plots: PlotSet, extra: Iterable[Section] = ()) -> str:
    """The report of a study; `extra` is where later stages append their sections."""
    subtitle = (f"{report.data} · {report.task} · metric {report.metric} ({report.direction}) · "
                f"best {report.score_name} {_fmt(report.best_value)}")
    return render_page(f"Study {report.name}", subtitle, [*study_sections(report, plots), *extra])
