"""What a run ran on: CPU model, GPUs TensorFlow sees, library versions; GPU set-up when present."""

from __future__ import annotations

import os
import platform
import socket
from functools import lru_cache
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_may_be_present() -> bool:
    """Whether a GPU may be visible to TensorFlow, judged without importing it (seconds): an NVIDIA
    device node or driver tool, unless `CUDA_VISIBLE_DEVICES` hides every device."""
    import shutil

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


@lru_cache(maxsize=1)
def configure_tensorflow() -> list[str]:
    """Turn memory growth on for every visible GPU and return their names (empty on CPU)."""
    from tuner._quiet import import_tensorflow

    tf = import_tensorflow()

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def configure_mixed_precision(enabled: bool) -> str:
    """Set Keras' global dtype policy: mixed_float16 only when asked and a GPU is present.

    On a CPU mixed precision is slower, not faster, so the request is ignored there. Output layers
    are float32 in every family, as Keras' mixed-precision guide asks.
    """
    from tuner.models.keras.training import keras

    policy = "mixed_float16" if enabled and configure_tensorflow() else "float32"
    keras().mixed_precision.set_global_policy(policy)
    return policy


def device_tags(uses_tensorflow: bool) -> dict[str, str]:
    """Tags for an MLflow run; TensorFlow is imported only when the study trains Keras models."""
    gpus = configure_tensorflow() if uses_tensorflow else []
    tags = {
        "device": f"gpu:{gpus[0]}" if gpus else "cpu",
        "device.cpu": cpu_model(),
        "device.cpu_count": str(os.cpu_count()),
        "device.gpus": ", ".join(gpus) or "none",
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "python": platform.python_version(),
    }
    for package in ("tuner", "optuna", "tensorflow", "keras", "xgboost", "lightgbm", "catboost", "scikit-learn", "mlflow"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags
