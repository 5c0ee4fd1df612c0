"""What every Keras family shares beyond the training loop: its packages, its place last in the
portfolio, per-epoch curves, a seeded global random state and the memory released after each use.

A Keras family subclasses `KerasFamily` and writes only its space and its build
(`tuner/examples/tiny_keras_family.py`).
"""

from __future__ import annotations

from typing import ClassVar

from tuner.models.base import Family
from tuner.models.keras import training

KERAS_PACKAGES = {"tensorflow": "tensorflow", "keras": "keras", "optuna_integration": "optuna-integration"}


class KerasFamily(Family):
    """A family whose members are Keras models (`tuner.models.keras.training.KerasMember`)."""

    requires: ClassVar[dict[str, str]] = KERAS_PACKAGES
    portfolio_rank: ClassVar[int] = 100  # networks are the slowest defaults: tried after every other family
    # a network's bagged trial takes tens of seconds on a few thousand rows on a CPU: under two minutes the
    # trees spend the time better (issue 26), so tuner leaves networks out of shorter budgets it picks for
    min_budget_s: ClassVar[float] = 120.0
    curve_step: ClassVar[str] = "epoch"
    draws_curves: ClassVar[bool] = True
    uses_tensorflow: ClassVar[bool] = True
    lends_deep_part: ClassVar[bool] = True  # its network ends in the `HEAD` layer a blend reads
    worker_start_s: ClassVar[float] = 10.0  # TensorFlow's import in a fold worker, two at once on two cores

    def seed(self, seed: int) -> None:
        training.keras().utils.set_random_seed(seed)

    def release_memory(self) -> None:
        training.release_memory()

    def fits_in_workers(self) -> bool:
        """On a CPU, yes: each worker is one more core. A GPU is shared by the study's own process instead."""
        from tuner.core.devices import configure_tensorflow

        return not configure_tensorflow()

    def limit_process_threads(self, threads: int) -> None:
        training.limit_threads(threads)
