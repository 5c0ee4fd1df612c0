"""Blending refitted members of one or more studies into ensembles (BOOK.md, "Ensembling")."""

from tuner.ensemble.fitted import COMBINERS, Combiner, FittedEnsemble, FittedMember, WeightedAverage, register_combiner
from tuner.ensemble.blends import StackedLinear, WideAndDeep  # registered too, so every saved blend loads

__all__ = ["COMBINERS", "Combiner", "FittedEnsemble", "FittedMember", "StackedLinear", "WeightedAverage", "WideAndDeep",
           "register_combiner"]
