"""Quality at equal wall-clock budget, measured the way a user would: rows the product never saw.

For each generated table (benchmarks/tables.py: real-looking, never downloaded) the rows are cut
once into a user's file (80 %) and rows held back from everything (20 %). Each contender learns
from the user's file only and is scored once on the held-back rows:
- tuner: `tuner run-all study.yaml --budget B` as a fresh process (its wall time includes start-up),
  then `tuner predict` of the export on the held-back rows; beside it tuner's own best single
  trial (the build's `best_single` blend) on the same rows;
- scikit-learn defaults (logistic regression / ridge, random forest, HistGradientBoosting) on
  imputed, one-hot inputs; XGBoost (`enable_categorical`) and LightGBM defaults on pandas
  categoricals; CatBoost defaults on its own `cat_features` (levels as strings, "missing" one of them);
- FLAML's `AutoML` with `time_budget=B` on the same two cores, when installed (`pip install -e '.[bench]'`).

Usage: python benchmarks/quality.py [--budgets 60,300] [--tables churn,land_use,...] [--no-flaml]
                                   [--families linear,random_forest,...]
Prints one table per budget with the bar per table, and writes benchmarks/results/quality.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tables import TABLES  # noqa: E402

from tuner.evaluate.finalize import bootstrap_interval  # noqa: E402
from tuner.core.metrics import METRICS  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FAMILIES = ["linear", "random_forest", "xgboost", "hist_boosting", "dense"]
FLAML_METRIC = {"roc_auc": "roc_auc", "accuracy": "accuracy", "rmse": "rmse"}
TUNER, RF, XGB = "tuner export", "random forest defaults", "XGBoost defaults"
HGB, LGBM, CATBOOST = "HistGradientBoosting defaults", "LightGBM defaults", "CatBoost defaults"
LIBRARY_DEFAULTS = [RF, XGB, HGB, LGBM, CATBOOST]  # the bar: the export is never below any of them


def user_rows(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    """The user's file (features and `target`) and the held-back rows, cut once per table."""
    from sklearn.model_selection import train_test_split

    make, task, metric = TABLES[name]
    X, y = make()
    frame = X.copy()
    frame["target"] = y
    train, held = train_test_split(frame, test_size=0.2, random_state=seed,
                                   stratify=y if task != "regression" else None)
    return train.reset_index(drop=True), held.reset_index(drop=True), task, metric


def score(metric: str, classes: list | None, y: pd.Series, predicted: np.ndarray) -> tuple[float, float]:
    """Held-back score and its bootstrap standard error; `predicted` are probabilities in `classes` order."""
    m = METRICS[metric]
    truth = np.asarray(y, dtype=np.float64) if classes is None else np.searchsorted(classes, np.asarray(y))
    _, _, se = bootstrap_interval(m, truth, predicted)
    return m.score(truth, predicted), se


def _defaults(train: pd.DataFrame, held: pd.DataFrame, task: str, metric: str, classes) -> dict:
    from catboost import CatBoostClassifier, CatBoostRegressor
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                                  RandomForestClassifier, RandomForestRegressor)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from xgboost import XGBClassifier, XGBRegressor

    X, y, Xh = train.drop(columns="target"), train["target"], held.drop(columns="target")
    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    numeric = [c for c in X.columns if c not in categorical]
    encode = lambda: ColumnTransformer([  # noqa: E731
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical)])
    classify = task != "regression"
    label = (lambda v: np.searchsorted(classes, np.asarray(v))) if classify else (lambda v: np.asarray(v, float))
    contenders = {
        "logistic / ridge defaults": make_pipeline(encode(), LogisticRegression(max_iter=2000) if classify else Ridge()),
        RF: make_pipeline(encode(), (RandomForestClassifier if classify else RandomForestRegressor)(n_jobs=-1, random_state=0)),
        HGB: make_pipeline(encode(), (HistGradientBoostingClassifier if classify
                                      else HistGradientBoostingRegressor)(random_state=0)),
    }
    results = {}
    for name, model in contenders.items():
        started = time.perf_counter()
        model.fit(X, label(y))
        predicted = model.predict_proba(Xh) if classify else model.predict(Xh)
        results[name] = (*score(metric, classes, held["target"], predicted), time.perf_counter() - started)
    as_categories = lambda frame: frame.astype({c: "category" for c in categorical})  # noqa: E731
    X_cat, Xh_cat = as_categories(X), as_categories(Xh)
    for c in categorical:  # the held-back rows' categories in the training rows' order, unseen ones missing
        seen = X_cat[c].cat.categories
        Xh_cat[c] = pd.Categorical(Xh[c].where(Xh[c].isin(seen)), categories=seen)
    boosters = {
        XGB: (XGBClassifier if classify else XGBRegressor)(enable_categorical=True, tree_method="hist", n_jobs=0,
                                                          random_state=0),
        LGBM: (LGBMClassifier if classify else LGBMRegressor)(random_state=0, verbose=-1),  # pandas categoricals
    }
    for name, booster in boosters.items():
        started = time.perf_counter()
        booster.fit(X_cat, label(y))
        predicted = booster.predict_proba(Xh_cat) if classify else booster.predict(Xh_cat)
        results[name] = (*score(metric, classes, held["target"], predicted), time.perf_counter() - started)
    as_strings = lambda frame: frame.assign(**{  # noqa: E731  (CatBoost takes no NaN level: "missing" is one)
        c: frame[c].astype(object).where(frame[c].notna(), "missing").astype(str) for c in categorical})
    started = time.perf_counter()
    catboost = (CatBoostClassifier if classify else CatBoostRegressor)(random_seed=0, verbose=False,
                                                                      allow_writing_files=False)
    catboost.fit(as_strings(X), label(y), cat_features=categorical)
    predicted = catboost.predict_proba(as_strings(Xh)) if classify else catboost.predict(as_strings(Xh))
    results[CATBOOST] = (*score(metric, classes, held["target"], predicted), time.perf_counter() - started)
    return results


def _flaml(train: pd.DataFrame, held: pd.DataFrame, task: str, metric: str, classes, budget: float) -> dict:
    from flaml import AutoML

    X, y, Xh = train.drop(columns="target"), train["target"], held.drop(columns="target")
    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    X, Xh = X.astype({c: "category" for c in categorical}), Xh.astype({c: "category" for c in categorical})
    started = time.perf_counter()
    automl = AutoML()
    automl.fit(X, y, task="regression" if task == "regression" else "classification", time_budget=budget,
               metric=FLAML_METRIC[metric], verbose=0, seed=0)
    if task == "regression":
        predicted = automl.predict(Xh)
    else:
        proba = automl.predict_proba(Xh)
        order = [list(automl.classes_).index(c) for c in classes]
        predicted = proba[:, order]
    return {f"FLAML ({automl.best_estimator})": (*score(metric, classes, held["target"], predicted),
                                                 time.perf_counter() - started)}


def _tuner(name: str, train: pd.DataFrame, held: pd.DataFrame, task: str, metric: str, classes, budget: float,
           folder: Path, families: list[str]) -> tuple[dict, dict]:
    data = folder / f"{name}.csv"
    train.to_csv(data, index=False)
    held.drop(columns="target").to_csv(folder / f"{name}-new.csv", index=False)
    study = {"name": f"{name}-{budget:.0f}", "data": {"source": data.name, "target": "target"},
             **({"families": families} if families else {}), "budget": {"trials": 10_000}}
    path = folder / f"{name}-{budget:.0f}.yaml"
    path.write_text(yaml.safe_dump(study))
    stores = ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
              "--root", str(folder / "ensembles")]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "tuner", "run-all", str(path), "--budget", str(budget), *stores],
                         capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"tuner run-all failed on {name}: {run.stderr[-2000:]}")
    model = folder / "ensembles" / study["name"]
    started = time.perf_counter()
    predicted_file = folder / f"{name}-predictions.csv"
    subprocess.run([sys.executable, "-m", "tuner", "predict", str(model), str(folder / f"{name}-new.csv"),
                    "-o", str(predicted_file)], check=True, capture_output=True, cwd=folder)
    predict_s = time.perf_counter() - started
    predictions = pd.read_csv(predicted_file)
    columns = [f"proba_{c}" for c in classes] if classes is not None else ["prediction"]
    exported = predictions[columns].to_numpy() if classes is not None else predictions["prediction"].to_numpy()
    from tuner.ensemble.fitted import FittedEnsemble

    best = FittedEnsemble.load(folder / "ensembles" / ".built" / study["name"] / "best_single")
    single = best.predict_scores(held.drop(columns="target"))
    manifest = json.loads((model / "manifest.json").read_text())
    trials = next((line for line in run.stdout.splitlines() if re.match(r"search: \d+ trials", line)), "")
    facts = {"wall_s": wall, "predict_s": predict_s, "blend": manifest["blend"], "trials": trials.split(",")[0],
             "timing": next((line for line in run.stdout.splitlines() if line.startswith("time:")), "")}
    return ({TUNER: (*score(metric, classes, held["target"], exported), wall),
             f"tuner best single trial ({best.members[0].family})": (*score(metric, classes, held["target"], single), wall)},
            facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="60,300", help="seconds of `tuner run-all --budget` (and FLAML's)")
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--no-flaml", action="store_true")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="the families of tuner's study file; 'auto': none named, tuner chooses")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    try:
        import flaml  # noqa: F401
        with_flaml = not args.no_flaml
    except ImportError:
        with_flaml = False
    RESULTS.mkdir(exist_ok=True)
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"budgets {', '.join(f'{b:.0f}' for b in budgets)} s; FLAML {'on' if with_flaml else 'off'}", flush=True)
    rows = []
    defaults: dict[str, dict] = {}  # a table's library defaults do not depend on the budget: fitted once
    for budget in budgets:
        for name in args.tables.split(","):
            train, held, task, metric = user_rows(name)
            classes = None if task == "regression" else sorted(pd.unique(train["target"]))
            if name not in defaults:
                defaults[name] = _defaults(train, held, task, metric, classes)
            results = dict(defaults[name])
            with tempfile.TemporaryDirectory() as tmp:
                mine, facts = _tuner(name, train, held, task, metric, classes, budget, Path(tmp),
                                     [] if args.families == "auto" else args.families.split(","))
            results.update(mine)
            if with_flaml:
                results.update(_flaml(train, held, task, metric, classes, budget))
            for contender, (value, se, seconds) in results.items():
                rows.append({"budget": budget, "table": name, "metric": metric, "contender": contender, "score": value,
                             "se": se, "seconds": seconds, **({k: v for k, v in facts.items()} if contender == TUNER else {})})
                print(f"{budget:4.0f} s  {name:<15} {contender:<40} {metric} {value:.4f} +/- {se:.4f}  {seconds:6.1f} s",
                      flush=True)
            print(f"{budget:4.0f} s  {name:<15} tuner: {facts['trials']}; blend {facts['blend']}; "
                  f"predict {facts['predict_s']:.1f} s; {facts['timing']}", flush=True)
    fields = sorted({k for row in rows for k in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(RESULTS / "quality.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for budget in budgets:
        _print_table([r for r in rows if r["budget"] == budget], budget)


def _print_table(rows: list[dict], budget: float) -> None:
    """One line per table: every contender's held-back score, and the bar."""
    tables = list(dict.fromkeys(r["table"] for r in rows))
    contenders = list(dict.fromkeys(r["contender"].split(" (")[0] for r in rows))
    print(f"\n### budget {budget:.0f} s\n")
    print("| table (metric) | " + " | ".join(contenders)
          + " | tuner wall s | export vs RF / XGB / HGB / LightGBM / CatBoost defaults | vs own best trial |")
    print("|---|" + "---:|" * len(contenders) + "---:|---|---|")
    better = 0
    for table in tables:
        mine = {r["contender"].split(" (")[0]: r for r in rows if r["table"] == table}
        sign = 1 if METRICS[mine[TUNER]["metric"]].direction == "maximize" else -1
        export = mine[TUNER]

        def versus(other: dict) -> str:
            gain = sign * (export["score"] - other["score"])
            if gain == 0:
                return "equal"
            return "better" if gain > 0 else ("worse within 1 SE" if -gain <= export["se"] else "WORSE beyond 1 SE")

        verdicts = [versus(mine[default]) for default in LIBRARY_DEFAULTS]
        better += all(v == "better" for v in verdicts)
        single = versus(next(r for k, r in mine.items() if k.startswith("tuner best single")))
        cells = [f"{mine[c]['score']:.4f}" if c in mine else "-" for c in contenders]
        held = "held" if export["wall_s"] <= budget * 1.05 else "OVER"
        print(f"| {table} ({export['metric']}) | " + " | ".join(cells)
              + f" | {export['wall_s']:.0f} ({held}) | {' / '.join(verdicts)} | {single} |")
    print(f"\nbetter than every library default on {better} of {len(tables)} tables at {budget:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
