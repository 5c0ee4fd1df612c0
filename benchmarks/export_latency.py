"""Load time and predict latency of an exported deep + tree blend, through pyfunc and in-process.

Fits a dense network and XGBoost on generated_mixed (numbers, categoricals with gaps, a text note),
blends them 50/50, exports the blend with `tuner export` (to a temporary folder and MLflow store),
then times:
- load, cold: a fresh Python process from start to a loaded model (imports of mlflow, tuner,
  TensorFlow included), `mlflow.pyfunc.load_model` against `FittedEnsemble.load`;
- load, warm: a second load in a process that has already imported everything;
- predict: 1 row and 1,000 raw rows, `pyfunc.predict` (schema checks included) against
  `FittedEnsemble.predict_frame` on the same rows, and a POST /invocations round trip
  (`dataframe_split` JSON) to `mlflow models serve --env-manager local` on 127.0.0.1.
Every figure is the median over the repeats. Usage: python benchmarks/export_latency.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.data import load_dataset, prepare_parts
from tuner.ensemble import FittedEnsemble, FittedMember, WeightedAverage
from tuner.ensemble.store import write_build
from tuner.export import export_ensemble
from tuner.models import FAMILIES, ProblemSpec

MEMBERS = {
    "dense": {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.1, "regularizer": "none",
              "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64},
    "xgboost": {"learning_rate": 0.05, "max_depth": 6, "min_child_weight": 1.0, "subsample": 0.9,
                "colsample_bytree": 0.9, "reg_lambda": 1.0, "reg_alpha": 0.0},
}
COLD_LOAD = """
import sys, time
started = time.perf_counter()
if sys.argv[1] == "pyfunc":
    import mlflow.pyfunc
    mlflow.pyfunc.load_model(sys.argv[2])
else:
    from tuner.ensemble import FittedEnsemble
    FittedEnsemble.load(sys.argv[2])
print(time.perf_counter() - started)
"""


def deep_and_tree_blend(epochs: int, rounds: int) -> tuple[FittedEnsemble, object]:
    dataset = load_dataset("builtin:generated_mixed")
    fit, _, preprocessor, encoder = prepare_parts(dataset, "binary", np.arange(len(dataset.y)), {})
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=fit.X("tabular").shape[1],
                       max_epochs=epochs, max_rounds=rounds, **preprocessor.input_shapes())
    members = [FittedMember("bench", trial, family, params, spec.max_epochs if family == "dense" else rounds,
                            "tabular", FAMILIES[family].build(params, spec).fit(fit.X("tabular"), fit.y))
               for trial, (family, params) in enumerate(MEMBERS.items())]
    ensemble = FittedEnsemble("weighted", "binary", "roc_auc", list(encoder.classes_), preprocessor, members,
                              WeightedAverage(np.array([0.5, 0.5])), dataset.fingerprint, "benchmark",
                              example=dataset.X.head(5))
    return ensemble, dataset.X


def export(ensemble: FittedEnsemble, root: Path) -> Path:
    record = {"name": "bench", "studies": ["bench"], "task": "binary", "metric": "roc_auc", "direction": "maximize",
              "chosen": "weighted", "best_single": None, "members": [m.record() for m in ensemble.members],
              "blends": {"weighted": {"folder": "weighted", "weights": [0.5, 0.5]}},
              "fingerprint": ensemble.fingerprint, "split_digest": "benchmark", "tracking_run_id": None,
              "built_at": None}
    write_build("bench", record, lambda folder: ensemble.save(folder / "weighted"), root=root)
    return export_ensemble("bench", root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}").folder


def median_seconds(action, repeats: int) -> float:
    action()  # warm-up: graph tracing, caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cold_load(kind: str, path: Path, repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return statistics.median(
        float(subprocess.run([sys.executable, "-c", COLD_LOAD, kind, str(path)], capture_output=True, text=True,
                             env=env, check=True).stdout.split()[-1])
        for _ in range(repeats))


def served(folder: Path, batches: list, repeats: int) -> tuple[float, list[float]]:
    """Seconds until /ping answers, and the median POST /invocations round trip per batch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("mlflow models serve exited") from None
                time.sleep(0.2)
        ready = time.perf_counter() - started

        def post(batch):
            body = json.dumps({"dataframe_split": json.loads(batch.to_json(orient="split", index=False))}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=60).read()

        return ready, [median_seconds(lambda: post(batch), repeats) for batch in batches]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="predict repeats (cold loads: a fifth of it)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    import mlflow.pyfunc

    ensemble, rows = deep_and_tree_blend(args.epochs, args.rounds)
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as root:
        folder = export(ensemble, Path(root))
        blend_folder = folder / "artifacts" / "weighted"
        cold_repeats = max(3, args.repeats // 5)
        loads = {
            "pyfunc": (cold_load("pyfunc", folder, cold_repeats),
                       median_seconds(lambda: mlflow.pyfunc.load_model(str(folder)), cold_repeats)),
            "in-process": (cold_load("fitted", blend_folder, cold_repeats),
                           median_seconds(lambda: FittedEnsemble.load(blend_folder), cold_repeats)),
        }
        model, loaded = mlflow.pyfunc.load_model(str(folder)), FittedEnsemble.load(blend_folder)
        batch = rows.sample(1000, replace=True, random_state=0).reset_index(drop=True)
        one = batch.head(1)
        predicts = {
            "pyfunc": [median_seconds(lambda: model.predict(x), args.repeats) for x in (one, batch)],
            "in-process": [median_seconds(lambda: loaded.predict_frame(x), args.repeats) for x in (one, batch)],
        }
        ready, predicts["HTTP"] = served(folder, [one, batch], args.repeats)
        loads["HTTP"] = (ready, None)
    print(f"deep + tree blend (dense {MEMBERS['dense']['layers']}x{MEMBERS['dense']['units']}, "
          f"XGBoost {args.rounds} rounds depth {MEMBERS['xgboost']['max_depth']}) on generated_mixed; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; medians")
    print(f"{'path':<11} {'load cold s':>11} {'load warm s':>11} {'1 row ms':>9} {'1,000 rows ms':>14} {'rows/s':>8}")
    for path in ("pyfunc", "in-process", "HTTP"):
        (cold, warm), (single, thousand) = loads[path], predicts[path]
        warm_text = "-" if warm is None else f"{warm:.2f}"
        print(f"{path:<11} {cold:>11.2f} {warm_text:>11} {single * 1e3:>9.1f} {thousand * 1e3:>14.1f} "
              f"{1000 / thousand:>8.0f}")
    print("HTTP: load cold = start of `mlflow models serve` until /ping answers; predict = POST round trip")


if __name__ == "__main__":
    main()
