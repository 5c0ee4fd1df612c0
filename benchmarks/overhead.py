"""What tuner costs on top of the work itself: per-trial overhead, pruning savings, RAM.

1. Per-trial overhead. The same trivial objective (one suggested float, a fixed `--work` seconds
   of sleep) run as bare in-memory Optuna, as Optuna on SQLite, and as a full tuner study (data
   handling, family dispatch, SQLite storage with heartbeats, one MLflow child run per trial with
   params, tags and metrics). Overhead = tuner's seconds per trial minus bare Optuna's.
2. Pruning savings. A dense study on breast_cancer without pruning, with the median pruner and
   with Hyperband, same seed and trial count: epochs trained, wall seconds, best val score.
3. RAM over a long Keras study: resident memory after each dense trial.

Usage: python benchmarks/overhead.py [--trials 40] [--prune-trials 20] [--ram-trials 30] [--only overhead,pruning,ram] [--quick]
Writes benchmarks/results/overhead.csv as well as printing the tables.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import psutil
import yaml

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.models import Family, Member, ProblemSpec, register
from tuner.pipeline.study_run import run_study

RESULTS = Path(__file__).parent / "results"
optuna.logging.set_verbosity(optuna.logging.WARNING)


class _SleepMember(Member):
    """Sleeps for the configured work time and predicts the class prior: the trivial objective."""

    def __init__(self, work_s: float, n_classes: int) -> None:
        super().__init__()
        self.work_s, self.n_classes = work_s, n_classes

    def fit(self, X, y, X_val=None, y_val=None, trial=None):
        time.sleep(self.work_s)
        self.prior_ = np.bincount(y, minlength=self.n_classes) / len(y)
        return self

    def predict_scores(self, X):
        rng = np.random.default_rng(0)
        scores = np.tile(self.prior_, (len(X), 1)) + rng.uniform(0, 1e-3, (len(X), self.n_classes))
        return scores / scores.sum(axis=1, keepdims=True)

    def save(self, path):
        raise NotImplementedError("the benchmark's trivial member is never exported")

    @classmethod
    def load(cls, path):
        raise NotImplementedError("the benchmark's trivial member is never exported")


class _SleepFamily(Family):
    name = "benchmark_sleep"
    work_s = 0.0

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {"x": trial.suggest_float("x", 0.0, 1.0)}

    def build(self, params: dict, spec: ProblemSpec) -> Member:
        return _SleepMember(self.work_s, spec.n_classes)


def _study_file(folder: Path, name: str, families: list[str], trials: int, **extra) -> Path:
    spec = {"name": name, "data": {"source": "builtin:breast_cancer"}, "metric": "roc_auc",
            "split": {"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 0},
            "families": families, "budget": {"trials": trials, **extra.pop("budget", {})}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _seconds_per_trial(study: optuna.Study) -> float:
    """Start-to-start spacing of consecutive trials: everything a trial costs, storage included."""
    starts = sorted(t.datetime_start for t in study.trials if t.datetime_start is not None)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    return statistics.median(gaps)


def _storage_of(url: str):
    from tuner.study.storage import open_storage

    return open_storage(url)


def overhead(trials: int, work_s: float) -> list[dict]:
    family = _SleepFamily()
    family.work_s = work_s
    register(family)

    def bare(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(work_s)
        return x

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, storage in [("optuna, in memory", None), ("optuna, SQLite", f"sqlite:///{tmp}/bare.db")]:
            study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=0))
            study.optimize(bare, n_trials=trials)
            rows.append({"setup": label, "s_per_trial": _seconds_per_trial(study)})
        for label, storage in [("tuner (SQLite + MLflow + data)", f"sqlite:///{tmp}/optuna.db"),
                               ("tuner (journal file + MLflow + data)", f"journal:///{tmp}/optuna.log")]:
            name = "overhead-" + label.split()[1].strip("(")
            path = _study_file(tmp, name, [_SleepFamily.name], trials, pruner={"name": "none"})
            run_study(path, storage_url=storage, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
            study = optuna.load_study(study_name=name, storage=_storage_of(storage))
            rows.append({"setup": label, "s_per_trial": _seconds_per_trial(study)})
    base = rows[0]["s_per_trial"]
    for row in rows:
        row["overhead_ms"] = (row["s_per_trial"] - base) * 1000
        row["overhead_pct_of_1s_trial"] = (row["s_per_trial"] - base) * 100
    return rows


def pruning(trials: int) -> list[dict]:
    """Epochs trained by a dense-only study without pruning, with the median pruner and with Hyperband.

    Dense only, because the bar is about epochs (XGBoost's cheap rounds would swamp the count); same
    seed and trial count, so the searches start alike (they part once pruning changes the history).
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tracking = f"sqlite:///{tmp}/mlflow.db"
        for pruner in ("none", "median", "hyperband"):
            name = f"pruning-{pruner}"
            path = _study_file(tmp, name, ["dense"], trials, budget={"epochs": 60, "patience": 8},
                               pruner={"name": pruner, "startup_trials": 5, "warmup_steps": 3},
                               sampler={"name": "tpe", "seed": 0})
            storage = f"sqlite:///{tmp}/{name}.db"
            started = time.perf_counter()
            result = run_study(path, storage_url=storage, tracking_uri=tracking)
            wall = time.perf_counter() - started
            study = optuna.load_study(study_name=name, storage=storage)
            epochs = sum(len(t.intermediate_values) for t in study.trials)
            rows.append({"pruner": pruner, "epochs_trained": epochs, "wall_s": wall,
                         "pruned": result.counts.get("PRUNED", 0), "best_val_roc_auc": result.best_value})
    without = rows[0]
    for row in rows:
        row["epochs_saved_pct"] = 100 * (1 - row["epochs_trained"] / without["epochs_trained"])
        row["wall_saved_pct"] = 100 * (1 - row["wall_s"] / without["wall_s"])
        row["best_vs_none"] = row["best_val_roc_auc"] - without["best_val_roc_auc"]
    return rows


def ram(trials: int) -> list[dict]:
    process = psutil.Process()
    samples: list[float] = []

    def sample(progress) -> None:
        if progress.done > len(samples):
            samples.append(process.memory_info().rss / 2**20)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = _study_file(tmp, "ram", ["dense"], trials, budget={"epochs": 10, "patience": 3},
                           pruner={"name": "none"})
        run_study(path, storage_url=f"sqlite:///{tmp}/optuna.db", tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                  on_progress=sample)
    settled = samples[min(4, len(samples) - 1)]
    per_trial = (samples[-1] - settled) / max(len(samples) - 5, 1)
    return [{"trials": len(samples), "rss_after_first_mib": samples[0], "rss_after_5_mib": settled,
             "rss_last_mib": samples[-1], "growth_per_trial_mib": per_trial}]


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}\n")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="trivial trials per setup")
    parser.add_argument("--work", type=float, default=0.0, help="seconds of work in each trivial trial")
    parser.add_argument("--prune-trials", type=int, default=20)
    parser.add_argument("--ram-trials", type=int, default=30)
    parser.add_argument("--only", default="overhead,pruning,ram")
    parser.add_argument("--quick", action="store_true", help="fewer trials: 30 trivial, 16 pruning, 15 RAM")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.prune_trials, args.ram_trials = 30, 16, 15
    chosen = set(args.only.split(","))
    RESULTS.mkdir(exist_ok=True)
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    with open(RESULTS / "overhead.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        for title, run in [("Per-trial overhead (trivial objective)", lambda: overhead(args.trials, args.work)),
                           ("Pruning savings (dense, breast_cancer)", lambda: pruning(args.prune_trials)),
                           ("RAM over a long Keras study (dense, breast_cancer)", lambda: ram(args.ram_trials))]:
            key = title.split()[0].lower().replace("per-trial", "overhead")
            if key not in chosen:
                continue
            rows = run()
            _print(title, rows)
            writer.writerow([title])
            writer.writerow(rows[0].keys())
            writer.writerows([r.values() for r in rows])


if __name__ == "__main__":
    main()
