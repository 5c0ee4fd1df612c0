"""Resident memory across repeated Keras trials: does `release_memory` keep a long study flat?

Runs N dense and N convnet trials on digits (a fixed small configuration, a few epochs each), the
way the objective does (build, fit, score, release), and prints a table of RSS after each trial.
Usage: python benchmarks/keras_memory.py [--trials 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psutil

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.data.preprocess import FeaturePreprocessor
from tuner.models import FAMILIES, ProblemSpec
from tuner.models.keras.training import release_memory

PARAMS = {
    "dense": {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.1, "regularizer": "none",
              "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64},
    "convnet": {"conv": "conv2d", "filters": 16, "kernel_size": 3, "blocks": 2, "downsample": "max_pool",
                "batch_norm": True, "residual": True, "inception": False, "head": "global_average",
                "dropout": 0.1, "dense_units": 32, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, y = bunch.images[..., None].astype(np.float32), bunch.target
    preprocessor = FeaturePreprocessor().fit(images[:1200])
    spec = ProblemSpec(task="multiclass", metric="accuracy", n_classes=10, n_features=64, max_epochs=args.epochs,
                       patience=args.epochs, **preprocessor.input_shapes())
    process = psutil.Process()
    print(f"{'family':<8} {'trial':>5} {'rss MiB':>8} {'growth MiB':>10} {'seconds':>8}")
    for name, params in PARAMS.items():
        family = FAMILIES[name]
        view = family.view_for(spec)
        X, X_val = preprocessor.transform(images[:1200], view), preprocessor.transform(images[1200:], view)
        first = None
        for trial in range(args.trials):
            started = time.perf_counter()
            member = family.build(params, spec).fit(X, y[:1200], X_val, y[1200:])
            member.predict_scores(X_val)
            del member
            release_memory()
            rss = process.memory_info().rss / 2**20
            first = first or rss
            print(f"{name:<8} {trial:>5} {rss:>8.0f} {rss - first:>10.0f} {time.perf_counter() - started:>8.1f}")


if __name__ == "__main__":
    main()
