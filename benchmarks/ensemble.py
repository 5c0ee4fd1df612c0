"""Does blending beat the best single model? Sealed-test scores at equal search budget.

For each dataset one study searches its families (the same trials feed every blend, so each blend
costs no extra search), then `tuner ensemble build` makes the best single member (by out-of-fold
score), the plain average, the weighted blend, the stacked blend and the wide-and-deep blend, and
scores each once on the study's sealed test split with bootstrap standard errors.
The bar (issue 5): the chosen blend is never worse than the best single model by more than the
test score's standard error, and is better on most datasets.

Usage: python benchmarks/ensemble.py [--quick] [--datasets breast_cancer,digits,...] [--table CSV]
Writes benchmarks/results/ensemble.csv (ensemble-quick.csv with --quick) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import yaml

import tuner._quiet  # noqa: F401  (quiet TensorFlow)
from tuner.ensemble.build import build_ensemble
from tuner.ensemble.judge import BLENDS
from tuner.pipeline.study_run import run_study

DATASETS = {
    "breast_cancer": {"data": {"source": "builtin:breast_cancer"}, "metric": "roc_auc",
                      "families": ["linear", "random_forest", "xgboost", "dense"]},
    "digits": {"data": {"source": "builtin:digits"}, "metric": "accuracy",
               "families": ["convnet", "xgboost", "linear"]},
    "diabetes": {"data": {"source": "builtin:diabetes"}, "metric": "rmse",
                 "families": ["linear", "random_forest", "xgboost", "dense"]},
    "generated_mixed": {"data": {"source": "builtin:generated_mixed"}, "metric": "roc_auc",
                        "families": ["linear", "xgboost", "wide_deep", "dense"]},
    "wine": {"data": {"source": "builtin:wine"}, "metric": "log_loss",
             "families": ["linear", "random_forest", "xgboost", "dense"]},
}


def study_spec(name: str, dataset: dict, trials: int, epochs: int, rounds: int) -> dict:
    return {"name": name, **dataset, "split": {"test_fraction": 0.25, "validation_fraction": 0.2, "seed": 5},
            "budget": {"trials": trials, "epochs": epochs, "rounds": rounds, "patience": 5},
            "sampler": {"name": "tpe", "seed": 0}}


def run(dataset: str, work: Path, trials: int, epochs: int, rounds: int, folds: int) -> list[dict]:
    spec = study_spec(f"bench-{dataset}", DATASETS[dataset], trials, epochs, rounds)
    study_file = work / f"{dataset}.yaml"
    study_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    storage, tracking = f"sqlite:///{work}/optuna.db", f"sqlite:///{work}/mlflow.db"
    started = time.perf_counter()
    run_study(study_file, storage, tracking)
    searched = time.perf_counter() - started
    started = time.perf_counter()
    record = build_ensemble(dataset, [spec["name"]], storage, tracking, per_family=2, folds=folds, root=work / "ensembles")
    built = time.perf_counter() - started
    return [{"dataset": dataset, "task": record["task"], "metric": record["metric"], "direction": record["direction"],
             "blend": blend, "chosen": blend == record["chosen"], "oof": round(row["oof"], 5),
             "test": round(row["test"], 5), "test_se": round(row["test_se"], 5), "members": len(row["members"]),
             "trials": trials, "search_s": round(searched), "build_s": round(built),
             "dropped": len(record["dropped"])}
            for blend, row in record["blends"].items()]


def compare(rows: list[dict], blend: dict) -> tuple[str, bool, bool]:
    """`blend` vs the best single member on test: text, within one SE or better, strictly better."""
    single = next(r for r in rows if r["blend"] == "best_single")
    sign = 1 if blend["direction"] == "maximize" else -1
    gain = sign * (blend["test"] - single["test"])
    se = max(blend["test_se"], single["test_se"])
    verdict = "better" if gain > se else "worse" if gain < -se else "within 1 SE"
    return f"{blend['blend']}: {gain:+.4f} ({verdict}, SE {se:.4f})", gain >= -se, gain > 0


def print_table(rows: list[dict]) -> None:
    print("test score ± bootstrap SE; * = the blend chosen by out-of-fold score (what export ships)\n")
    print("| dataset | metric | " + " | ".join(BLENDS) + " | chosen vs best single | best learned blend by oof vs best single |")
    print("|---|---|" + "---:|" * len(BLENDS) + "---|---|")
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    held = better = 0
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        sign = 1 if mine[0]["direction"] == "maximize" else -1
        cells = [f"{r['test']:.4f} ± {r['test_se']:.4f}{'*' if r['chosen'] else ''}" for r in mine]
        chosen_text, _, _ = compare(mine, next(r for r in mine if r["chosen"]))
        learned = max((r for r in mine if r["blend"] != "best_single"), key=lambda r: sign * r["oof"])
        learned_text, ok, won = compare(mine, learned)
        held += ok
        better += won
        print(f"| {dataset} | {mine[0]['metric']} | " + " | ".join(cells) + f" | {chosen_text} | {learned_text} |")
    print(f"\nthe best learned blend (by oof) is within one SE of the best single model or better on {held} of "
          f"{len(datasets)} datasets and better on {better} of {len(datasets)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials, epochs and folds: a smoke run")
    parser.add_argument("--datasets", default="breast_cancer,diabetes,wine,generated_mixed,digits")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier run's CSV")
    args = parser.parse_args()
    if args.table:
        with args.table.open() as handle:
            rows = [{**r, "chosen": r["chosen"] == "True", **{k: float(r[k]) for k in ("oof", "test", "test_se")}}
                    for r in csv.DictReader(handle)]
        print_table(rows)
        return
    trials, epochs, rounds, folds = (6, 8, 60, 3) if args.quick else (16, 40, 300, 5)
    out = Path("benchmarks/results") / ("ensemble-quick.csv" if args.quick else "ensemble.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tuner-bench-ensemble-") as folder:
        for dataset in args.datasets.split(","):
            rows += run(dataset, Path(folder), trials, epochs, rounds, folds)
            with out.open("w", newline="") as handle:  # after each dataset, so a long run leaves its part
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            print(f"{dataset}: done", flush=True)
    print(f"\n{trials} trials per study, {folds}-fold out-of-fold; CSV: {out}\n")
    print_table(rows)

if __name__ == "__main__":
    main()
