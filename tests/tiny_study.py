"""A real study small enough for tests: 4 trials of the fast families in temp Optuna and MLflow stores,
bagged 2-fold as the product splits by default (5 folds; 2 for speed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUDY_YAML = """\
name: {name}
description: Tiny study for dashboard tests.
data: {{source: builtin:breast_cancer}}
task: binary
metric: roc_auc
split: {{seed: 1, folds: 2}}
families: [linear, random_forest, xgboost]
budget: {{trials: {trials}, rounds: 20}}
"""


@dataclass
class TinyStudy:
    name: str
    file: Path
    storage: str
    tracking_uri: str

    @property
    def store_args(self) -> list[str]:
        return ["--storage", self.storage, "--tracking-uri", self.tracking_uri]


def make_tiny_study(folder: Path, name: str = "tiny", trials: int = 4) -> TinyStudy:
    from tuner.pipeline.study_run import run_study

    folder.mkdir(parents=True, exist_ok=True)
    study = TinyStudy(name, folder / f"{name}.yaml", f"sqlite:///{folder}/optuna.db", f"sqlite:///{folder}/mlflow.db")
    study.file.write_text(STUDY_YAML.format(name=name, trials=trials))
    run_study(study.file, study.storage, study.tracking_uri)
    return study
