"""Silence start-up noise (TensorFlow, absl, Optuna's experimental warnings, MLflow telemetry) unless the user set it.

Imported before anything that may import TensorFlow. Newer TensorFlow prints absl lines straight
to file descriptor 2 while importing, so the import itself runs with that descriptor muted.
"""

import contextlib
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# MLflow's usage telemetry wraps every client call and tries the network; tuner runs offline
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # saving / loading models draws bars on stderr

# loky's resource tracker, a process of its own, removes the shared files of fold workers that a fast
# exit (`os._exit`) left and warns of each as "leaked": the clean-up stays, the warning goes
_TRACKER_NOTE = "ignore::UserWarning:joblib.externals.loky.backend.resource_tracker"
if _TRACKER_NOTE not in os.environ.get("PYTHONWARNINGS", ""):
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _TRACKER_NOTE]))

warnings.filterwarnings("ignore", module=r"optuna(_integration)?\..*")
warnings.filterwarnings("ignore", message=r".*(experimental|deprecated).*", category=Warning, module=r"tuner\..*")


@contextlib.contextmanager
def muted_stderr():
    """Point fd 2 at /dev/null for the block (C++ loggers ignore Python's sys.stderr)."""
    if os.environ.get("TUNER_VERBOSE"):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Import TensorFlow once, quietly, and keep its Python logger to errors."""
    with muted_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    tf.get_logger().setLevel("ERROR")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    return tf
