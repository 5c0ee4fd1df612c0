"""The registry of model families; a duplicate name fails loudly at import."""

from __future__ import annotations

from tuner.core.errors import TunerError
from tuner.models.base import Family, Member

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


def member_classes() -> dict[str, type[Member]]:
    """tuner's member classes (those of `tuner.models`) by the `module:Class` name a saved blend records."""
    found, pending = {}, list(Member.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("tuner.models."):
            found[f"{cls.__module__}:{cls.__name__}"] = cls
    return found


def member_class(name: str) -> type[Member]:
    """The member class a saved blend names; a saved name never picks a module to import, so anything
    but one of tuner's own member classes is refused."""
    known = member_classes()
    if name not in known:
        raise TunerError(f"member class {name!r} is not one of tuner's ({', '.join(sorted(known))}); "
                         "the blend was not loaded: export it again with this tuner")
    return known[name]
