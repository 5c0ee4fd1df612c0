"""Start-up and predict time of exported blends: `tuner predict` against `mlflow.pyfunc.load_model`.

Fits two blends on generated_mixed (numbers, categoricals with gaps, a text note) and exports each
with `tuner export` (to a temporary folder and MLflow store):
- tree-only: logistic regression + random forest + XGBoost (no Keras member);
- deep + tree: a dense network + XGBoost, 50/50.
Then, for each, times from process start to the last prediction written, over 1,000 raw rows
(a CSV with the training columns, gaps included), in a fresh process each time:
- `tuner predict EXPORT rows.csv -o predictions.csv` (`python -m tuner`, as a user runs it);
- a script that calls `mlflow.pyfunc.load_model(EXPORT).predict(pd.read_csv(rows.csv))` and writes
  the CSV, the path `mlflow models serve` and other MLflow clients take (its model-load seconds
  are shown too).
Both paths' predictions are compared: the same labels, probabilities equal to 1e-12. Every figure is the median over
`--runs` fresh processes; each run also reports whether TensorFlow was imported.
Usage: python benchmarks/export_latency.py [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import tuner._quiet  # noqa: F401  (quiet TensorFlow)

REPO = Path(__file__).resolve().parents[1]
XGBOOST = {"learning_rate": 0.05, "max_depth": 6, "min_child_weight": 1.0, "subsample": 0.9, "colsample_bytree": 0.9,
           "reg_lambda": 1.0, "reg_alpha": 0.0}
BLENDS = {
    "tree-only": {"linear": {"C": 1.0}, "random_forest": {"n_estimators": 200, "max_depth": 12, "max_features": 0.5,
                                                          "min_samples_leaf": 2, "bootstrap": True},
                  "xgboost": XGBOOST},
    "deep + tree": {"dense": {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.1, "regularizer": "none",
                              "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64},
                    "xgboost": XGBOOST},
}
PYFUNC = """
import sys, time
started = time.perf_counter()
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.perf_counter()
model.predict(pd.read_csv(sys.argv[2])).to_csv(sys.argv[3], index=False)
print("load", loaded - started, "tensorflow" in sys.modules)
"""


def fit_blend(members: dict, epochs: int, rounds: int):
    from tuner.data import load_dataset, prepare_parts
    from tuner.ensemble import FittedEnsemble, FittedMember, WeightedAverage
    from tuner.models import FAMILIES, ProblemSpec

    dataset = load_dataset("builtin:generated_mixed")
    fit, _, preprocessor, encoder = prepare_parts(dataset, "binary", np.arange(len(dataset.y)), {})
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=fit.X("tabular").shape[1],
                       max_epochs=epochs, max_rounds=rounds, **preprocessor.input_shapes())
    fitted = [FittedMember("bench", trial, family, params, None, "tabular",
                           FAMILIES[family].build(params, spec).fit(fit.X("tabular"), fit.y))
              for trial, (family, params) in enumerate(members.items())]
    weights = np.full(len(fitted), 1.0 / len(fitted))
    ensemble = FittedEnsemble("weighted", "binary", "roc_auc", list(encoder.classes_), preprocessor, fitted,
                              WeightedAverage(weights), dataset.fingerprint, "benchmark", example=dataset.X.head(5))
    return ensemble, dataset.X


def export(ensemble, name: str, root: Path) -> Path:
    from tuner.ensemble.store import write_build
    from tuner.serve.export import export_ensemble

    record = {"name": name, "studies": ["bench"], "task": "binary", "metric": "roc_auc", "direction": "maximize",
              "chosen": "weighted", "best_single": None, "members": [m.record() for m in ensemble.members],
              "blends": {"weighted": {"folder": "weighted", "weights": ensemble.combiner.weights.tolist()}},
              "fingerprint": ensemble.fingerprint, "split_digest": "benchmark", "tracking_run_id": None,
              "built_at": None}
    write_build(name, record, lambda folder: ensemble.save(folder / "weighted"), root=root)
    return export_ensemble(name, root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}").folder


def timed(command: list[str], runs: int) -> tuple[float, list[str]]:
    """Median wall seconds from process start to exit over `runs` fresh processes, and each run's stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seconds, outputs = [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        outputs.append(done.stdout)
    return statistics.median(seconds), outputs


def measure(folder: Path, rows_csv: Path, scratch: Path, runs: int) -> dict:
    ours, theirs = scratch / f"{folder.name}-tuner.csv", scratch / f"{folder.name}-pyfunc.csv"
    probe = ("import runpy, sys; sys.argv = ['tuner', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('tuner', run_name='__main__')\n"
             "finally:\n    print('tensorflow' in sys.modules, file=sys.stderr)\n")
    predict_s, _ = timed([sys.executable, "-m", "tuner", "predict", str(folder), str(rows_csv), "-o", str(ours)], runs)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probed = subprocess.run([sys.executable, "-c", probe, "predict", str(folder), str(rows_csv), "-o", str(ours)],
                            capture_output=True, text=True, env=env, cwd=REPO)
    tuner_tf = probed.stderr.strip().splitlines()[-1] == "True"
    pyfunc_s, outputs = timed([sys.executable, "-c", PYFUNC, str(folder), str(rows_csv), str(theirs)], runs)
    loads = [float(out.split()[1]) for out in outputs]
    # labels exactly; probabilities to 1e-12, since a random forest adds up its trees' votes across threads
    # in whatever order they finish (two runs of either path differ in the last bit)
    pd.testing.assert_frame_equal(pd.read_csv(ours), pd.read_csv(theirs), check_exact=False, rtol=1e-12, atol=0)
    return {"tuner predict": predict_s, "tuner tf": tuner_tf, "pyfunc": pyfunc_s,
            "pyfunc load": statistics.median(loads), "pyfunc tf": outputs[0].split()[2] == "True"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per figure (the median is shown)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep the exports and the rows here (default: a temporary folder)")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    try:
        results, rows = {}, None
        for kind, members in BLENDS.items():
            name = kind.replace(" + ", "-")
            folder = root / name
            if not (folder / "MLmodel").is_file():
                ensemble, rows = fit_blend(members, args.epochs, args.rounds)
                folder = export(ensemble, name, root)
            rows_csv = root / "rows.csv"
            if not rows_csv.is_file():
                if rows is None:
                    from tuner.data import load_dataset

                    rows = load_dataset("builtin:generated_mixed").X
                rows.sample(1000, replace=True, random_state=0).to_csv(rows_csv, index=False)
            results[kind] = measure(folder, rows_csv, root, args.runs)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"1,000 raw rows of generated_mixed, from process start to predictions written; {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; medians of {args.runs} fresh processes")
    print(f"{'export':<12} {'tuner predict s':>15} {'pyfunc load + predict s':>23} {'of which load s':>15} "
          f"{'TensorFlow imported (tuner / pyfunc)':>37}")
    for kind, r in results.items():
        imported = f"{'yes' if r['tuner tf'] else 'no'} / {'yes' if r['pyfunc tf'] else 'no'}"
        print(f"{kind:<12} {r['tuner predict']:>15.2f} {r['pyfunc']:>23.2f} {r['pyfunc load']:>15.2f} {imported:>37}")
    print("the two paths' predictions compared: same labels, probabilities equal to 1e-12")


if __name__ == "__main__":
    main()
