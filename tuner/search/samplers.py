"""Samplers and pruners from the study file, with pruning scoped to each model family.

Epoch 5 of a network and round 5 of a boosted tree are not comparable, so a trial is only
compared with earlier trials of its own family.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.pruners import BasePruner

from tuner.study.trial_attrs import FAMILY_ATTR
from tuner.core.config import PrunerConfig, SamplerConfig


def make_sampler(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    """`seed` already differs per worker and per resume, so no two workers replay one sequence."""
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if config.name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      warn_independent_sampling=False)


def make_pruner(config: PrunerConfig, folds: int | None = None) -> BasePruner:
    """With `folds` the pruner's steps are folds, not epochs: it may stop a trial from its second fold on."""
    if config.name == "none":
        return optuna.pruners.NopPruner()
    warmup = 1 if folds else config.warmup_steps
    if config.name == "hyperband":
        inner: BasePruner = optuna.pruners.HyperbandPruner(min_resource=max(1, warmup), max_resource=folds or "auto")
    elif config.name == "successive_halving":
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup))
    else:
        inner = optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=warmup)
    return FamilyScopedPruner(inner)


class FamilyScopedPruner(BasePruner):
    """Runs the wrapped pruner over a view of the study holding only the trial's own family."""

    def __init__(self, pruner: BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        family = trial.user_attrs.get(FAMILY_ATTR)
        if family is None:
            return self.pruner.prune(study, trial)
        return self.pruner.prune(_FamilyView(study, family), trial)


class _FamilyView:
    def __init__(self, study: optuna.Study, family: str) -> None:
        self._study = study
        self._family = family

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get(FAMILY_ATTR) == self._family]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
