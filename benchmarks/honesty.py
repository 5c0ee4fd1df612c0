"""Is the reported test score honest? The winner's validation-vs-test gap against a random configuration's.

For each data set and seed: run a study (by default linear, random forest, XGBoost and a dense
network of at most 10 epochs; `--families` narrows it), finalize it (the winner refitted on train + validation and scored once on the sealed test split),
and score one randomly chosen complete trial other than the winner the same way (refit, test score) inside this script,
so the study's own test-look count stays 1. Selecting the best of N validation scores favours
configurations validation happens to flatter, so the winner's gap (val - test, in the metric's
units, + = validation flattered) should exceed a random configuration's, whose expected gap is ~0.
That difference is what `study finalize` shows the user and why the test split stays sealed.

Usage: python benchmarks/honesty.py [--trials 60] [--seeds 3] [--folds K] [--datasets breast_cancer,diabetes]
       [--families linear,random_forest,xgboost,dense]
Quick check (about 2 minutes): --trials 8 --seeds 1 --datasets breast_cancer
Writes benchmarks/results/honesty.csv (or --output).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import yaml

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.evaluate.finalize import finalize_study, score_on_test
from tuner.study.sealed import open_sealed
from tuner.pipeline.study_run import run_study

METRIC = {"breast_cancer": "roc_auc", "diabetes": "r2", "wine": "accuracy"}  # all maximised: gap = val - test
FAMILIES = "linear,random_forest,xgboost,dense"


def study_file(folder: Path, dataset: str, seed: int, trials: int, folds: int | None, families: list[str]) -> Path:
    split = {"seed": seed, **({"folds": folds} if folds else {"validation_fraction": 0.2})}
    spec = {
        "name": f"honesty-{dataset}-{seed}" + (f"-cv{folds}" if folds else ""),
        "data": {"source": f"builtin:{dataset}"}, "metric": METRIC[dataset], "split": split,
        "families": families,
        "budget": {"trials": trials, "epochs": 10, "rounds": 200, "patience": 3},
        "sampler": {"name": "tpe", "seed": seed},
    }
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def one_run(folder: Path, tracking_uri: str, dataset: str, seed: int, trials: int, folds: int | None,
            families: list[str]) -> dict:
    path = study_file(folder, dataset, seed, trials, folds, families)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    started = time.perf_counter()
    result = run_study(path, storage, tracking_uri)
    report = finalize_study(result.study_name, storage, tracking_uri, top=1)
    sealed = open_sealed(result.study_name, storage)
    winner = report.winner
    others = [t for t in sealed.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.number != winner.trial]  # a configuration nobody selected: the winner is not a candidate
    chosen = random.Random(seed).choice(others)
    [randomly] = score_on_test(sealed, [chosen])
    return {
        "dataset": dataset, "metric": report.metric, "score": report.score_name, "seed": seed,
        "trials_complete": report.trials_complete, "winner_family": winner.family,
        "winner_search": winner.val, "winner_test": winner.test, "winner_gap": winner.val - winner.test,
        "random_family": randomly.family, "random_search": randomly.val, "random_test": randomly.test,
        "random_gap": randomly.val - randomly.test, "rows_scored": report.rows_scored,
        "rows_test": report.rows_test, "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(rows: list[dict]) -> None:
    score = rows[0]["score"].split("_")[0]
    print(f"| dataset | seed | winner family | winner {score}_ | winner test_ | winner gap ({score} - test) "
          f"| random config gap ({score} - test) | seconds |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['dataset']} ({row['metric']}) | {row['seed']} | {row['winner_family']} | {row['winner_search']:.4f} "
              f"| {row['winner_test']:.4f} | {row['winner_gap']:+.4f} | {row['random_gap']:+.4f} | {row['seconds']:.0f} |")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        print(f"| **{dataset} mean over {len(mine)} seeds** | | | {statistics.mean(r['winner_search'] for r in mine):.4f} "
              f"| {statistics.mean(r['winner_test'] for r in mine):.4f} "
              f"| **{statistics.mean(r['winner_gap'] for r in mine):+.4f}** "
              f"| **{statistics.mean(r['random_gap'] for r in mine):+.4f}** | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=None, help="K-fold objective instead of one validation part")
    parser.add_argument("--datasets", default="breast_cancer,diabetes")
    parser.add_argument("--families", default=FAMILIES, help="comma-separated model families")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "honesty.csv")
    args = parser.parse_args()
    families = args.families.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuner-honesty-") as scratch:
        folder = Path(scratch)
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        for dataset in args.datasets.split(","):
            for seed in range(args.seeds):
                rows.append(one_run(folder, tracking_uri, dataset, seed, args.trials, args.folds, families))
                row = rows[-1]
                print(f"{dataset} seed {seed}: winner {row['winner_family']} gap {row['winner_gap']:+.4f}, "
                      f"random {row['random_family']} gap {row['random_gap']:+.4f} ({row['seconds']:.0f}s)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{args.trials} trials per study, families {', '.join(families)}; gap = search score - test score "
          f"(+ = the search score flattered the model)\n")
    print_table(rows)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
