"""The registry of model families; a duplicate name fails loudly at import."""

from __future__ import annotations

from tuner.models.base import Family, Member, ProblemSpec, ScopedTrial

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise RuntimeError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    return FAMILIES[name]


from tuner.models import (  # noqa: E402,F401  (registers them)
    convnet, custom, dense, hist_boosting, linear, multi_input, random_forest, sequence, wide_deep, xgboost,
)

__all__ = ["FAMILIES", "Family", "Member", "ProblemSpec", "ScopedTrial", "get_family", "register"]
