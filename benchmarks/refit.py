"""What the export's refit on every row is worth: the same built blend exported three ways, scored on
rows the product never saw.

For each table (benchmarks/tables.py, cut as benchmarks/quality.py cuts it: a user's file and
held-back rows) one `tuner run-all --budget B` searches and builds; then the chosen blend is
exported again with `--refit none` (as scored: trained on the 80 % search rows), `--refit single`
(one model per member on every row of the user's file) and `--refit bag` (a fresh K-fold bag per
member on every row), and each export predicts the held-back rows through `tuner predict`. Prints
each shape's held-back score (with its bootstrap standard error) and the seconds its export took.

Usage: python benchmarks/refit.py [--budget 60] [--tables churn,land_use,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from quality import score, user_rows  # noqa: E402
from tables import TABLES  # noqa: E402

SHAPES = ["none", "single", "bag"]


def tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tuner", *args], capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"tuner {args[0]} failed: {done.stderr[-2000:]}")
    return done


def measure(name: str, budget: float, folder: Path) -> dict[str, tuple[float, float, float]]:
    train, held, task, metric = user_rows(name)
    classes = None if task == "regression" else sorted(pd.unique(train["target"]))
    train.to_csv(folder / "rows.csv", index=False)
    held.drop(columns="target").to_csv(folder / "new.csv", index=False)
    (folder / "study.yaml").write_text(yaml.safe_dump({"name": name, "data": {"source": "rows.csv", "target": "target"},
                                                       "budget": {"trials": 10_000}}))
    stores = ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
              "--root", str(folder / "ensembles")]
    tuner("run-all", "study.yaml", "--budget", str(budget), *stores, cwd=folder)
    results = {}
    for shape in SHAPES:
        out = folder / f"export-{shape}"
        started = time.perf_counter()
        tuner("export", name, "--refit", shape, "--out", str(out), *stores, cwd=folder)
        seconds = time.perf_counter() - started
        tuner("predict", str(out), "new.csv", "-o", str(folder / f"{shape}.csv"), cwd=folder)
        predicted = pd.read_csv(folder / f"{shape}.csv")
        columns = [f"proba_{c}" for c in classes] if classes is not None else ["prediction"]
        values = predicted[columns].to_numpy() if classes is not None else predicted["prediction"].to_numpy()
        results[shape] = (*score(metric, classes, held["target"], values), seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--tables", default=",".join(TABLES))
    args = parser.parse_args()
    print(f"run-all --budget {args.budget:.0f}, then the chosen blend exported three ways; held-back rows\n")
    print("| table (metric) | " + " | ".join(f"`--refit {s}`" for s in SHAPES) + " | export s (none / single / bag) |")
    print("|---|" + "---:|" * len(SHAPES) + "---:|")
    for name in args.tables.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results = measure(name, args.budget, Path(tmp))
        cells = [f"{results[s][0]:.4f} ± {results[s][1]:.4f}" for s in SHAPES]
        seconds = " / ".join(f"{results[s][2]:.0f}" for s in SHAPES)
        print(f"| {name} ({TABLES[name][2]}) | " + " | ".join(cells) + f" | {seconds} |", flush=True)


if __name__ == "__main__":
    main()
