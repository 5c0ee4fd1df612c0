"""A real study small enough for tests: 4 trials of the fast families in temp Optuna and MLflow stores,
bagged 2-fold as the product splits by default (5 folds; 2 for speed). And two cheaper ways in for
tests that do not look at what they leave out: `search` (the search without the study's plots) and
`run_in_process` (the CLI's entry point without a new interpreter)."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def search(study_file, storage_url: str, tracking_uri: str, trials: int | None = None, **options):
    """`study run`'s search as `tuner.pipeline.study_run.run_study` runs it, less its last step, the
    study's plots on its MLflow run (seconds of drawing): for tests that never look at those plots."""
    from tuner.search.runner import run_study

    return run_study(study_file, storage_url, tracking_uri, trials, **options)


def run_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> SimpleNamespace:
    """`tuner ARGS` through the console entry point (`tuner.cli.app.main`, all `python -m tuner` runs)
    in this process: the same parsing, output, one-line errors and exit status, without a new
    interpreter's start-up (3 s, more with TensorFlow). For tests about a command's output, not about
    processes; returns `returncode`, `stdout` and `stderr` as `subprocess.run` does."""
    from tuner.cli import app as cli
    from tuner.cli.shared import EXIT

    capsys.readouterr()  # what the test printed before is not the command's
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["tuner", *args])
        patch.setattr(EXIT, "holds_no_store", EXIT.holds_no_store)  # `predict` sets it for its exit: put back after
        patch.setattr(EXIT, "fast_exit", lambda code: sys.exit(code))  # `run-all` would end this process at once
        patch.setattr(gc, "freeze", lambda: None)  # and then freezes the collector: not this process's
        with pytest.raises(SystemExit) as stopped:
            cli.main()
    out, err = capsys.readouterr()
    code = stopped.value.code
    return SimpleNamespace(returncode=0 if code is None else code, stdout=out, stderr=err)
