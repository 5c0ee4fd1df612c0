"""The registry of model families; a duplicate name fails loudly at import."""

from __future__ import annotations

from tuner.models.base import Family

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise RuntimeError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    return FAMILIES[name]
