"""tuner: honest hyperparameter search and ensembling for the models of Deep Learning with Python."""

from tuner import _quiet  # noqa: F401  (environment for TensorFlow before anything imports it)

__version__ = "0.1.0"

from tuner.core.secrets import redact_logs  # noqa: E402

redact_logs()  # no log line carries a URL's password
