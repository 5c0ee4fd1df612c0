"""Blending refitted members of one or more studies into ensembles (BOOK.md, "Ensembling")."""

from tuner.ensemble.fitted import COMBINERS, Combiner, FittedEnsemble, FittedMember, WeightedAverage, register_combiner

__all__ = ["COMBINERS", "Combiner", "FittedEnsemble", "FittedMember", "WeightedAverage", "register_combiner"]
