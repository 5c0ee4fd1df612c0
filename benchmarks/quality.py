"""Test scores at equal wall-clock budget: library defaults against tuner's search and blend.

For each dataset one sealed split (tuner's own `make_split`, seed 0) is made; every contender is
fitted on the non-test rows and scored once on the test rows:
- scikit-learn defaults: logistic regression / ridge, random forest;
- XGBoost defaults; a default Keras MLP (2 x 64 relu, Adam, early stopping on the validation part);
- tuner's best single model after `finalize` and its exported blend, from `tuner run-all --budget`.
Defaults take the seconds they need (well under the budget); tuner spends the budget.

Usage: python benchmarks/quality.py [--budget 120] [--datasets breast_cancer,wine,...] [--quick]
Prints a table and writes benchmarks/results/quality.csv.
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.data import TEST, TRAIN, VALID, infer_task, load_dataset, make_split, prepare_parts
from tuner.finalize import bootstrap_interval
from tuner.metrics import METRICS, default_metric
from tuner.models import FAMILIES, ProblemSpec

RESULTS = Path(__file__).parent / "results"
DATASETS = ["breast_cancer", "wine", "digits", "diabetes", "generated_mixed", "generated_text"]
MLP = {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.0, "regularizer": "none", "batch_norm": False,
       "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32}
FAMILIES_SEARCHED = {"digits": ["linear", "xgboost", "dense", "convnet"],
                     "generated_text": ["linear", "xgboost", "dense", "sequence"]}
DEFAULT_FAMILIES = ["linear", "random_forest", "xgboost", "dense"]


def _defaults(dataset, task: str, metric: str, split) -> dict[str, tuple[float, float, float]]:
    """Each default contender's (test score, test standard error, seconds)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from xgboost import XGBClassifier, XGBRegressor

    fit_rows = np.sort(np.concatenate([split.rows(TRAIN), split.rows(VALID)]))
    fit, parts, preprocessor, encoder = prepare_parts(dataset, task, fit_rows, {
        "test": split.rows(TEST), "train": split.rows(TRAIN), "val": split.rows(VALID)})
    classify = task != "regression"
    contenders = {
        "logistic / ridge defaults": LogisticRegression(max_iter=2000) if classify else Ridge(),
        "random forest defaults": (RandomForestClassifier if classify else RandomForestRegressor)(n_jobs=-1, random_state=0),
        "xgboost defaults": (XGBClassifier if classify else XGBRegressor)(n_jobs=0, random_state=0),
    }
    test = parts["test"]
    results = {}
    for name, model in contenders.items():
        started = time.perf_counter()
        model.fit(fit.X("tabular"), fit.y)
        scores = model.predict_proba(test.X("tabular")) if classify else model.predict(test.X("tabular"))
        results[name] = _scored(metric, test.y, scores, time.perf_counter() - started)
    started = time.perf_counter()
    spec = ProblemSpec(task=task, metric=metric, n_classes=len(encoder.classes_) if classify else 0,
                       n_features=fit.X("tabular").shape[1], max_epochs=200, patience=10,
                       **preprocessor.input_shapes())
    mlp = FAMILIES["dense"].build(MLP, spec).fit(parts["train"].X("tabular"), parts["train"].y,
                                               parts["val"].X("tabular"), parts["val"].y)
    results["Keras MLP defaults"] = _scored(metric, test.y, mlp.predict_scores(test.X("tabular")),
                                            time.perf_counter() - started)
    return results


def _scored(metric: str, y: np.ndarray, scores: np.ndarray, seconds: float) -> tuple[float, float, float]:
    _, _, se = bootstrap_interval(METRICS[metric], y, scores)
    return METRICS[metric].score(y, scores), se, seconds


def _tuner(name: str, budget: float, folder: Path) -> dict[str, tuple[float, float, float]]:
    from tuner.pipeline import run_all

    families = FAMILIES_SEARCHED.get(name, DEFAULT_FAMILIES)
    study = {"name": f"quality-{name}", "data": {"source": f"builtin:{name}"},
             "split": {"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 0},
             "families": families, "budget": {"trials": 10_000, "epochs": 60},
             "pruner": {"name": "hyperband", "warmup_steps": 3}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    started = time.perf_counter()
    result = run_all(path, budget, storage_url=f"sqlite:///{folder}/optuna.db",
                     tracking_uri=f"sqlite:///{folder}/mlflow.db", ensembles_root=folder / "ensembles")
    seconds = time.perf_counter() - started
    print(f"{name:<16} tuner run-all stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
          + f" (budget {budget:.0f} s)")
    single = result.finalize.winner
    blend = result.build["blends"][result.build["chosen"]]
    return {f"tuner best single ({single.family})": (single.test, (single.test_high - single.test_low) / 3.92, seconds),
            f"tuner blend ({result.build['chosen']}, {result.trials} trials)": (blend["test"], blend.get("test_se", float("nan")), seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="seconds for tuner's whole run-all per dataset")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--quick", action="store_true", help="three datasets, 60-second budget")
    args = parser.parse_args()
    names = ["breast_cancer", "wine", "diabetes"] if args.quick else args.datasets.split(",")
    budget = 60.0 if args.quick else args.budget
    RESULTS.mkdir(exist_ok=True)
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"budget {budget:.0f} s per dataset")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            dataset = load_dataset(f"builtin:{name}")
            task = infer_task(dataset.y)
            metric = default_metric(task)
            split = make_split(dataset.y, task, 0.2, 0.2, 0, dataset.fingerprint)
            results = {**_defaults(dataset, task, metric, split), **_tuner(name, budget, Path(tmp))}
            sign = 1 if METRICS[metric].direction == "maximize" else -1
            best_default = max((v[0] for k, v in results.items() if "defaults" in k), key=lambda v: sign * v)
            for contender, (score, se, seconds) in results.items():
                rows.append({"dataset": name, "metric": f"test_{metric}", "contender": contender,
                             "score": score, "se": se, "seconds": seconds,
                             "vs_best_default": sign * (score - best_default)})
                print(f"{name:<16} {contender:<44} test_{metric} {score:.4f} +/- {se:.4f}  {seconds:6.1f} s")
    with open(RESULTS / "quality.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _print_bar(rows)
    print("\n| dataset | contender | test score | ± SE | seconds | better than best default by |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['dataset']} | {row['contender']} | {row['metric']} {row['score']:.4f} | {row['se']:.4f} | "
              f"{row['seconds']:.1f} | {row['vs_best_default']:+.4f} |")


def _print_bar(rows: list[dict]) -> None:
    """The issue's bar per dataset: the blend against every default and against tuner's own best single model."""
    print("\n| dataset | blend vs best default | blend vs tuner best single (1 SE = blend's test SE) |")
    print("|---|---|---|")
    beats = 0
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    for name in datasets:
        mine = [row for row in rows if row["dataset"] == name]
        blend = next(row for row in mine if row["contender"].startswith("tuner blend"))
        single = next(row for row in mine if row["contender"].startswith("tuner best single"))
        over_single = blend["vs_best_default"] - single["vs_best_default"]  # both signed: + is better
        beats += blend["vs_best_default"] > 0
        verdict = ("better" if over_single > 0 else "equal" if over_single == 0
                   else "worse within 1 SE" if -over_single <= blend["se"] else "worse by more than 1 SE")
        print(f"| {name} | {blend['vs_best_default']:+.4f} ({'beats every default' if blend['vs_best_default'] > 0 else 'does not beat them all'}) "
              f"| {over_single:+.4f} ({verdict}) |")
    print(f"\nthe blend beats every default on {beats} of {len(datasets)} datasets")


if __name__ == "__main__":
    main()
