"""Scale-out figures: trials per minute with 1, 2 and 4 workers on each storage, and per-trial overhead.

1. Throughput: N real `tuner study run` processes (the linear family on breast_cancer, MLflow tracking
   to a local SQLite store) join one study on SQLite, the journal file and PostgreSQL. Trials per
   minute are counted from the first trial's start to the last trial's end (process start-up excluded).
2. Overhead: a trivial objective (x**2) in bare in-memory Optuna, then on each storage with heartbeats,
   then with tuner's MLflow child run per trial as well: milliseconds per trial and ratio to bare.

Prints both tables and writes benchmarks/results/scaling.csv and benchmarks/results/overhead.csv.
Usage: python benchmarks/scaling.py [--trials 40] [--workers 1 2 4] [--overhead-trials 100]
Needs PostgreSQL on 127.0.0.1:5432 (user postgres); a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextmanager
def scratch_postgres() -> Iterator[str]:
    import psycopg

    name = f"tuner_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def storages(folder: Path, pg: str, tag: str) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{folder / f'{tag}.db'}", "journal": f"journal:///{folder / f'{tag}.log'}",
            "postgresql": pg}


def throughput(kind: str, storage: str, workers: int, trials: int, folder: Path) -> dict:
    name = f"bench-{kind}-{workers}-{uuid.uuid4().hex[:6]}"
    study_file = folder / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": name, "data": {"source": "builtin:breast_cancer"}, "families": ["linear"],
        "sampler": {"name": "random", "seed": 0}, "budget": {"trials": trials},
    }))
    tracking = f"sqlite:///{folder / f'mlflow-{kind}-{workers}.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tuner", "study", "run", str(study_file), "--storage", storage,
               "--tracking-uri", tracking]
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(workers)]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{kind} x{workers}: a worker failed:\n{err}")
    from tuner.study.storage import open_storage

    done = [t for t in optuna.load_study(study_name=name, storage=open_storage(storage)).trials
            if t.state.is_finished() and not t.user_attrs.get("skipped")]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"storage": kind, "workers": workers, "trials": len(done), "seconds": round(span, 2),
            "trials_per_minute": round(60 * len(done) / span, 1)}


def trivial(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -1.0, 1.0) ** 2


def overhead(kind: str, storage: str | None, tracked: bool, trials: int, folder: Path) -> float:
    """Milliseconds per trivial trial."""
    from tuner.study.storage import open_storage
    from tuner.tracking import Tracker

    study = optuna.create_study(storage=open_storage(storage) if storage else None,
                                study_name=f"overhead-{kind}-{tracked}-{uuid.uuid4().hex[:6]}",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    objective = trivial
    if tracked:
        tracker = Tracker(f"sqlite:///{folder / 'overhead-mlflow.db'}")
        experiment = tracker.experiment_id(study.study_name)
        parent = tracker.open_study_run(experiment, uuid.uuid4().hex, study.study_name, {}, {}, {})

        def objective(trial: optuna.Trial) -> float:
            run_id = tracker.start_trial(experiment, parent, trial.number, "trivial", {}, {})
            value = trivial(trial)
            tracker.finish_trial(run_id, "COMPLETE", {"val_x2": value}, {}, 0.0)
            return value

    study.optimize(objective, n_trials=3)  # warm-up: schema, connections, imports
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return 1000 * (time.perf_counter() - started) / trials


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="trials per throughput run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--overhead-trials", type=int, default=100)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="tuner-scaling-") as tmp, scratch_postgres() as pg:
        folder = Path(tmp)
        overhead_rows = []
        bare = overhead("memory", None, False, args.overhead_trials, folder)
        overhead_rows.append({"storage": "in-memory", "ms_per_trial": round(bare, 2), "ratio": 1.0,
                              "ms_with_tracking": "-", "ratio_with_tracking": "-"})
        for kind, url in storages(folder, pg, "overhead").items():
            plain = overhead(kind, url, False, args.overhead_trials, folder)
            tracked = overhead(kind, url, True, args.overhead_trials, folder)
            overhead_rows.append({"storage": kind, "ms_per_trial": round(plain, 2), "ratio": round(plain / bare, 1),
                                  "ms_with_tracking": round(tracked, 2),
                                  "ratio_with_tracking": round(tracked / bare, 1)})
        print("\nper-trial overhead, trivial objective (x**2), MLflow tracking to local SQLite")
        print(table(overhead_rows, list(overhead_rows[0])))
        write_csv(RESULTS / "overhead.csv", overhead_rows)
        if args.skip_throughput:
            return
        rows = []
        for kind in ("sqlite", "journal", "postgresql"):
            for workers in args.workers:
                url = storages(folder, pg, f"{kind}-{workers}")[kind]
                row = throughput(kind, url, workers, args.trials, folder)
                base = next((r for r in rows if r["storage"] == kind and r["workers"] == args.workers[0]), row)
                row["speedup"] = round(row["trials_per_minute"] / base["trials_per_minute"], 2)
                rows.append(row)
                print(f"  {kind} x{workers}: {row['trials_per_minute']} trials/min", flush=True)
        print(f"\ntrials per minute, linear family on breast_cancer, {args.trials} trials, tracked to local SQLite")
        print(table(rows, list(rows[0])))
        print(f"load average at end {os.getloadavg()[0]:.1f} (the machine is shared; figures are indicative)")
        write_csv(RESULTS / "scaling.csv", rows)


if __name__ == "__main__":
    main()
