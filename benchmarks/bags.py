"""Bagged trials at scale: the disk and memory of stored out-of-fold predictions, and selection time.

Writes out-of-fold predictions for `--trials` trials x `--rows` rows x `--classes` classes through
`tuner.study.trial_bags.TrialBags` (the same Optuna artifact store a study uses), reads them all back, and
times Caruana's selection over 100 and over every trial, alone and cross-fitted over 5 folds (what
an ensemble build runs). Prints one table.

Usage: python benchmarks/bags.py [--trials 500] [--rows 15000] [--classes 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import psutil

from tuner.study.trial_bags import TrialBags
from tuner.ensemble.selection import cross_fitted, greedy_selection
from tuner.core.metrics import METRICS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--rows", type=int, default=15_000)
    parser.add_argument("--classes", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.rows)
    truth = np.eye(args.classes)[y]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bags = TrialBags(Path(tmp))
        started = time.perf_counter()
        for _ in range(args.trials):
            trial = study.ask()
            skill = rng.uniform(0.2, 0.6)
            oof = rng.dirichlet(np.ones(args.classes), args.rows) * (1 - skill) + truth * skill
            bags.save(trial, oof, [])
            study.tell(trial, float(skill))
        write_s = time.perf_counter() - started
        disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        predictions = [bags.oof(t).astype(np.float64) for t in trials]
        read_s = time.perf_counter() - started
        held = psutil.Process().memory_info().rss - before
    rows.append(("store", f"{args.trials} trials x {args.rows:,} rows x {args.classes} classes (float32)",
                 f"{disk / 2**20:,.0f} MiB on disk, write {write_s:.1f} s, read all {read_s:.1f} s, "
                 f"{held / 2**20:,.0f} MiB in memory as float64"))
    metric = METRICS["accuracy"]
    ids = np.arange(args.rows) % 5
    for n in sorted({min(100, args.trials), args.trials}):
        started = time.perf_counter()
        greedy_selection(predictions[:n], y, metric)
        alone = time.perf_counter() - started
        started = time.perf_counter()
        cross_fitted(lambda p, t: greedy_selection(p, t, metric), predictions[:n], y, ids)
        crossed = time.perf_counter() - started
        rows.append(("selection", f"Caruana, 50 rounds, over {n} trials", f"{alone:.1f} s; cross-fitted over 5 folds "
                                                                           f"{crossed:.1f} s"))
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB\n")
    print("| what | size | measured |\n|---|---|---|")
    for what, size, measured in rows:
        print(f"| {what} | {size} | {measured} |")


if __name__ == "__main__":
    main()
