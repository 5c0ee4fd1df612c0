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


def fallback_deep_part() -> Family:
    """The family whose network a wide-and-deep blend uses when no member lends one (dense)."""
    return next(family for family in FAMILIES.values() if family.deep_part_params() is not None)


def portfolio_order(names: list[str]) -> list[str]:
    """Families in the order a new study tries their defaults: by `portfolio_rank`, ties by name."""
    return sorted(names, key=lambda name: (FAMILIES[name].portfolio_rank, name))
