"""Where `run-all --budget` spends its time, side by side with an earlier revision of tuner.

One generated table (benchmarks/tables.py, `churn` cut to `--rows` rows) and one study file with
four families; `tuner run-all --budget B` of this checkout and of `--against REV` (checked out in a
temporary git worktree, run with the same Python) each as a fresh process. Prints wall time,
CPU cores used (user + system seconds over wall seconds, for the whole run and, where the revision
reports it, for its search), trials, model fits (a bagged trial fits one model per fold), trials and fits per minute of search,
and each stage's seconds.

Usage: python benchmarks/throughput.py [--against d6e036d] [--budget 60] [--rows 3500]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tables import TABLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["linear", "random_forest", "xgboost", "dense"]


def run(source: Path, study: Path, folder: Path, budget: float) -> dict:
    stores = ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
              "--root", str(folder / "ensembles")]
    env = {**os.environ, "PYTHONPATH": str(source)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuner", "run-all", str(study), "--budget", str(budget), *stores],
                          capture_output=True, text=True, cwd=folder, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [t for t in optuna.load_study(study_name="throughput", storage=f"sqlite:///{folder}/optuna.db").trials
              if not t.user_attrs.get("skipped") and t.state.is_finished()]
    fits = sum(len(t.user_attrs.get("fold_scores", [None])) for t in trials)
    timing = next(line for line in done.stdout.splitlines() if line.startswith("time:"))
    search = float(timing.split("search ")[1].split(" s")[0])
    cores = re.search(r"search \d+ s \(([\d.]+) cores\)", timing)
    return {"wall": wall, "trials": len(trials), "fits": fits, "search": search, "timing": timing,
            "cores": cpu / wall, "search_cores": float(cores.group(1)) if cores else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="d6e036d", help="the earlier revision")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--rows", type=int, default=3500)
    args = parser.parse_args()
    X, y = TABLES["churn"][0](rows=args.rows)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.against], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for label, source in ((args.against, old), ("this checkout", REPO)):
                folder = tmp / label.replace(" ", "-")
                folder.mkdir()
                frame = X.copy()
                frame["target"] = y
                frame.to_csv(folder / "table.csv", index=False)
                (folder / "study.yaml").write_text(yaml.safe_dump({
                    "name": "throughput", "data": {"source": "table.csv", "target": "target"},
                    "families": FAMILIES, "budget": {"trials": 10_000}}))
                rows[label] = run(source, folder / "study.yaml", folder, args.budget)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    print(f"churn, {args.rows} rows, families {', '.join(FAMILIES)}, run-all --budget {args.budget:.0f}\n")
    print("| revision | wall s | cores (run) | cores (search) | trials | model fits | trials / min of search | "
          "fits / min of search | stages |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, r in rows.items():
        search_cores = "-" if r["search_cores"] is None else f"{r['search_cores']:.2f}"
        print(f"| {label} | {r['wall']:.0f} | {r['cores']:.2f} | {search_cores} | {r['trials']} | {r['fits']} | "
              f"{60 * r['trials'] / r['search']:.1f} | {60 * r['fits'] / r['search']:.1f} | "
              f"{r['timing'].removeprefix('time: ')} |")
    new, old_row = rows["this checkout"], rows[args.against]
    print(f"\nratios, this checkout / {args.against}: trials per minute "
          f"{(new['trials'] / new['search']) / (old_row['trials'] / old_row['search']):.2f}x, model fits per minute "
          f"{(new['fits'] / new['search']) / (old_row['fits'] / old_row['search']):.2f}x")


if __name__ == "__main__":
    main()
