"""tuner: honest hyperparameter search and ensembling for the models of Deep Learning with Python."""

from tuner import _quiet  # noqa: F401  (environment for TensorFlow before anything imports it)

__version__ = "0.1.0"
