"""Shared fixtures: temporary Optuna storage per test, one MLflow store per session (its schema
migration costs seconds), study files written on the fly, and the CLI run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# one fold at a time unless a test asks for more: a study's fold workers cost each test process
# seconds of start-up (tests/search/test_fold_waves.py and the family contract suite run them)
os.environ.setdefault("TUNER_FOLD_WORKERS", "1")
os.environ.setdefault("TUNER_SEARCH_PROCESSES", "1")  # run-all searches in this process unless a test asks for more


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.fixture
def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def write_study(tmp_path):
    """Write a study file from a dict and return its path; names are made unique per test."""

    def write(spec: dict, filename: str = "study.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


def tiny_study(name: str, **overrides) -> dict:
    """A small study split as the product splits by default: K-fold bags (2 folds rather than 5, for speed)."""
    spec = {
        "name": name,
        "data": {"source": "builtin:breast_cancer"},
        "split": {"test_fraction": 0.2, "folds": 2, "seed": 1},
        "families": ["linear", "random_forest"],
        "budget": {"trials": 3, "epochs": 4, "rounds": 40, "patience": 2},
    }
    spec.update(overrides)
    return spec


def holdout_study(name: str, **overrides) -> dict:
    """tiny_study with one validation part instead of folds, for tests about holdout-split studies."""
    return tiny_study(name, **{"split": {"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 1}, **overrides})


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m tuner ARGS` as a user would, in a clean process.

    `env` is added to the environment; a PYTHONPATH in it goes before the repository's."""
    extra = dict(env or {})
    path = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", None), str(REPO)]))
    env = {**os.environ, **extra, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "tuner", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)
