"""The model families: every module of this package is imported here, and each family module
registers its family (`register(MyFamily())` at import), so a new family is one new module.

Helpers (base, registry, Keras training, the scikit-learn member) register nothing.
"""

from __future__ import annotations

import importlib
import pkgutil

from tuner.models.base import Family, Member, ProblemSpec, ScopedTrial
from tuner.models.registry import FAMILIES, get_family, register

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):  # registers them
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "Family", "Member", "ProblemSpec", "ScopedTrial", "get_family", "register"]
