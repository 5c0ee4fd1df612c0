"""The model families: every module of this package is imported here, and each family module
registers its family (`register(MyFamily())` at import), so a new family is one new module, here or
in a sub-package (`keras/`, `estimators/`). They are imported in the order of their module names,
wherever they sit, so the registry's order does not depend on the folders.

Helpers (base, registry, Keras training, the scikit-learn member) register nothing.
"""

from __future__ import annotations

import importlib
import pkgutil

from tuner.models.base import Family, Member, ProblemSpec, ScopedTrial
from tuner.models.registry import FAMILIES, fallback_deep_part, get_family, portfolio_order, register

_MODULES = [m.name for m in pkgutil.walk_packages(__path__, prefix=f"{__name__}.") if not m.ispkg]
for _module in sorted(_MODULES, key=lambda name: name.rpartition(".")[2]):  # registers them
    importlib.import_module(_module)

__all__ = ["FAMILIES", "Family", "Member", "ProblemSpec", "ScopedTrial", "fallback_deep_part", "get_family",
           "portfolio_order", "register"]
