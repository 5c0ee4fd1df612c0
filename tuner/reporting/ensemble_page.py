"""What an ensemble build says: whether and why a blend beats the best single member.

Pure: the build record (build.json) in, Markdown or report sections out. Every score names its
split: `oof_` (out of fold, on train + validation) or `test_` (the sealed split, looked at once).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.core.metrics import direction_sign
from tuner.ensemble.store import BUILD_RECORD, ensembles_root
from tuner.reporting.plots import ensemble_plots
from tuner.reporting.study_page import Section, image, table

BLEND_NOTES = {
    "best_single": "the best member by out-of-fold score",
    "average": "plain average of the kept members",
    "weighted": "non-negative weights summing to one",
    "stacked": "regularised linear meta-model on the members' scores",
    "wide_deep": "jointly trained Keras wide (raw features + tree leaves) and deep part",
}


def _gain(record: dict[str, Any], a: float, b: float) -> float:
    """How much better `a` is than `b` in the metric's direction."""
    return a - b if direction_sign(record["direction"]) > 0 else b - a  # never -0.0: printed with a sign


def verdict(record: dict[str, Any]) -> list[str]:
    """Plain sentences: did a blend beat the best single member, out of fold and then on test, and why."""
    blends, m = record["blends"], record["metric"]
    chosen, single = blends[record["chosen"]], blends["best_single"]
    members = record["members"]
    matrix = np.asarray(record["correlation"]["matrix"], dtype=float)
    mean_r = float(matrix[np.triu_indices(len(matrix), 1)].mean()) if len(matrix) > 1 else 1.0
    lines = []
    if record["chosen"] == "best_single":
        lines.append(f"No blend beat the best single member ({record['best_single_member']}) out of fold, so it is "
                     f"the one to export: with {len(members)} member(s) correlating at r={mean_r:.2f} on average, "
                     "their errors do not cancel enough to pay for combining them.")
    else:
        weighted = blends["weighted"]
        top = sorted(members, key=lambda r: -r["weight"])[:3]
        lines.append(
            f"The {record['chosen']} blend is chosen by out-of-fold score: oof_{m} {chosen['oof']:.4f} vs "
            f"{single['oof']:.4f} for the best single member ({record['best_single_member']}), "
            f"{_gain(record, chosen['oof'], single['oof']):+.4f}. Its {len(members)} members correlate at "
            f"r={mean_r:.2f} on average, so their errors partly cancel; the weighted blend leans on "
            + ", ".join(f"{r['label']} ({r['weight']:.2f})" for r in top if r["weight"] > 0)
            + f" ({record['weighting']}, oof_{m} {weighted['oof']:.4f}).")
    gain, se = _gain(record, chosen["test"], single["test"]), max(chosen["test_se"], single["test_se"])
    if record["chosen"] != "best_single":
        judged = ("better than" if gain > se else "worse than" if gain < -se else "within one standard error of")
        paired = chosen.get("test_difference_se")
        lines.append(f"On the sealed test split ({record['rows']['test']} rows) it scores test_{m} {chosen['test']:.4f} "
                     f"vs {single['test']:.4f} (difference {gain:+.4f}, standard error of a test score ~{se:.4f}"
                     + (f", of the paired difference ~{paired:.4f}" if paired is not None else "")
                     + f"): {judged} the best single member.")
    looks = ", ".join(f"{s} {n}" for s, n in record["test_looks"].items())
    lines.append(f"Test looks counted on the source studies: {looks}." + (
        " A study looked at more than once no longer has an untouched test estimate."
        if any(n > 1 for n in record["test_looks"].values()) else ""))
    return lines


def render_markdown(record: dict[str, Any]) -> str:
    m = record["metric"]
    lines = [
        f"# Ensemble {record['name']}",
        "",
        f"Studies: {', '.join(record['studies'])} · {record['task']} · metric {m} ({record['direction']}) · "
        f"{record['folds']}-fold out-of-fold predictions on {record['rows']['oof']} train + validation rows · "
        f"{record['rows']['test']} sealed test rows, looked at once at the end.",
        "",
        *[f"- {line}" for line in record.get("verdict", [])],
        "",
        "## Blends",
        "",
        f"| blend | oof_{m} | test_{m} | test SE | test vs best single (paired SE) | gap (oof - test) | members | what |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    single = record["blends"]["best_single"]
    for blend, row in record["blends"].items():
        mark = " **(chosen)**" if blend == record["chosen"] else ""
        lines.append(f"| {blend}{mark} | {row['oof']:.4f} | {row['test']:.4f} | {row['test_se']:.4f} | "
                     f"{row['test'] - single['test']:+.4f} ({row['test_difference_se']:.4f}) | "
                     f"{row['oof'] - row['test']:+.4f} | {len(row['members'])} | {BLEND_NOTES[blend]} |")
    lines += ["", "## Members", "",
              f"| member | steps | val_{m} | oof_{m} | test_{m} | test SE | weight |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["members"]:
        lines.append(f"| {r['label']} | {r['steps'] if r['steps'] is not None else '-'} | {r['val']:.4f} | "
                     f"{r['oof']:.4f} | {r['test']:.4f} | {r['test_se']:.4f} | {r['weight']:.3f} |")
    if record["dropped"]:
        lines += ["", f"## Dropped near-duplicates (out-of-fold correlation above {record['correlation_threshold']})", ""]
        lines += [f"- {d['dropped']} (oof_{m} {d['oof']:.4f}): r={d['correlation']:.3f} with {d['kept']}, kept"
                  for d in record["dropped"]]
    lines += ["", "## Wide and deep", ""]
    if record["wide_deep"] is None:
        lines.append("- " + record.get("wide_deep_note", "not built: the time budget could not pay for it "
                                                         "(`tuner run-all --budget`)"))
    else:
        deep = record["wide_deep"]["deep_part"]
        lines += [f"- deep part: {deep['family']} from {deep['origin']}, {deep['steps']} epochs",
                  "- wide part: raw tabular features" + (f" + one-hot leaves of {record['wide_deep']['tree']}"
                                                           if record["wide_deep"]["tree"] else " (no tree member)")]
    return "\n".join(lines) + "\n"


def builds_for_study(study: str, root: str | Path | None = None) -> list[dict[str, Any]]:
    """Build records (build.json) of ensembles built from `study`, newest first."""
    found = []
    for path in sorted((ensembles_root(root) / ".built").glob(f"*/{BUILD_RECORD}")):
        record = json.loads(path.read_text())
        if study in record.get("studies", []):
            found.append(record)
    return sorted(found, key=lambda r: r.get("built_at", ""), reverse=True)


def ensemble_sections(study: str, root: str | Path | None = None) -> list[Section]:
    """Sections for `tuner report`: one per ensemble built from this study, with its plots."""
    sections = []
    for record in builds_for_study(study, root):
        m = record["metric"]
        blends = table(("blend", f"oof_{m}", f"test_{m}", "test SE", "members"),
                       [(f"{b} (chosen)" if b == record["chosen"] else b, f"{r['oof']:.4f}", f"{r['test']:.4f}",
                         f"{r['test_se']:.4f}", len(r["members"])) for b, r in record["blends"].items()])
        members = table(("member", f"oof_{m}", f"test_{m}", "weight"),
                        [(r["label"], f"{r['oof']:.4f}", f"{r['test']:.4f}", f"{r['weight']:.3f}")
                         for r in record["members"]])
        notes = "".join(f"<p>{_escape(line)}</p>" for line in record.get("verdict", []))
        dropped = "".join(f'<p class="note">dropped {_escape(d["dropped"])}: r={d["correlation"]:.3f} with '
                          f'{_escape(d["kept"])}</p>' for d in record["dropped"])
        captions = {"weights": f"member weights of the weighted blend ({record['weighting']})",
                    "correlation": "correlation of the members' out-of-fold predictions"}
        figures = "".join(image(png, captions[kind]) for kind, png in ensemble_plots(record).items())
        sections.append(Section(f"Ensemble {record['name']} (built {record['built_at']} from "
                                f"{', '.join(record['studies'])})", notes + blends + members + dropped + figures))
    return sections


def _escape(text: str) -> str:
    return html.escape(str(text))
