"""What a new study tries first, and which families a study file that names none searches.

The portfolio: each family's configurations known to be strong across many tables
(`Family.portfolio`: the library default, then AutoGluon's TabRepo-learned and pytabkit's tuned
defaults), queued before the sampler in rounds, every family's first configuration before any
family's second, the cheapest family first in each round (`Family.portfolio_rank`, as FLAML orders
its learners by cost), so the first seconds of any budget go to the cheap strong models.

The choice: a study file without `families:` gets every family that says tuner may pick it
(`Family.picked`), is installed, can read this data (`unsupported_reason`) and pays in the time
budget when one is known (`Family.min_budget_s`: the networks need two minutes).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.models.base import ProblemSpec
from tuner.models.registry import FAMILIES, portfolio_order

SAMPLED = "sampled"  # the label of a family's first trial when it has no configuration to start from


@dataclass(frozen=True)
class Queued:
    """One configuration of the portfolio: its family, the source it comes from, its params."""

    family: str
    label: str
    params: dict


def portfolio_queue(families: list[str], spec: ProblemSpec, trials: int,
                    caps: dict[str, int | None] | None = None) -> list[Queued]:
    """The configurations a new study runs first, at most `trials` and at most each family's cap
    (`max_trials`): round by round, cheapest family first in each round."""
    caps = caps or {}
    lists = {}
    for name in portfolio_order(families):
        configs = list(FAMILIES[name].portfolio(spec).items()) or [(SAMPLED, {})]
        lists[name] = configs[:caps.get(name) or len(configs)]
    queue = [Queued(name, *configs[i]) for i in range(max(map(len, lists.values()), default=0))
             for name, configs in lists.items() if i < len(configs)]
    return queue[:trials]


@dataclass(frozen=True)
class FamilyChoice:
    """The families tuner picked for a study that names none, and the one line saying why."""

    families: list[str]
    why: str

    def to_record(self) -> dict:
        return {"families": self.families, "why": self.why}

    @classmethod
    def from_record(cls, record: dict) -> FamilyChoice:
        return cls(list(record["families"]), record["why"])

    def line(self) -> str:
        return f"families chosen by tuner: {', '.join(self.families)} ({self.why})"


def choose_families(probe: ProblemSpec, rows: int, columns: int, seconds: float | None) -> FamilyChoice | None:
    """The families for this task and data (`probe`: shapes known before fitting; `rows`: those the
    search sees; `columns` of a table) within `seconds` of budget (None: no time limit); None when no
    family fits."""
    chosen, left_out = [], []
    for name in portfolio_order([n for n, family in FAMILIES.items() if family.picked]):
        family = FAMILIES[name]
        package = family.missing_package()
        if family.unsupported_reason(probe):
            continue  # a family for other data (images, text): not worth a word
        if package:
            left_out.append(f"{name}: {package} is not installed")
        elif family.min_budget_s and seconds is not None and seconds < family.min_budget_s:
            left_out.append(f"{name}: it pays from a {family.min_budget_s:.0f} s budget")
        else:
            chosen.append(name)
    if not chosen:
        return None
    budget = "no time limit" if seconds is None else f"a {seconds:.0f} s budget"
    why = f"{probe.task}, {rows:,} search rows, {_columns(probe, columns)}, {budget}"
    return FamilyChoice(chosen, why + (f"; left out {'; '.join(left_out)}" if left_out else ""))


def _columns(probe: ProblemSpec, columns: int) -> str:
    if probe.image_shape is not None:
        return "images " + "x".join(map(str, probe.image_shape))
    if probe.sequence_shape is not None:
        return "sequences " + "x".join(map(str, probe.sequence_shape))
    many = sum(size > 100 for size in probe.categorical_sizes)
    return (f"{columns} columns ({len(probe.categorical_sizes)} categorical"
            + (f", {many} of them with over 100 levels" if many else "") + ")")
