"""A new model family is one module in tuner/models/: adding it, and nothing else, makes it searchable.

The worked examples tuner/examples/knn_family.py and tiny_keras_family.py (a `KerasFamily`) are each
dropped into a copy of the package (so this test never changes the package other tests import), and
`tuner study run` searches them there.
"""

from __future__ import annotations

import shutil

import optuna
from optuna.trial import TrialState

from conftest import REPO, run_cli
from tuner.models import FAMILIES


def test_one_module_in_tuner_models_makes_a_family_searchable(tmp_path, write_study):
    assert "knn" not in FAMILIES  # the example is not a shipped family
    shutil.copytree(REPO / "tuner", tmp_path / "copy" / "tuner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tuner" / "examples" / "knn_family.py", tmp_path / "copy" / "tuner" / "models" / "knn.py")
    study_file = write_study({
        "name": "knn-iris", "data": {"source": "builtin:iris"}, "families": ["knn"],
        "split": {"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 3}, "budget": {"trials": 3},
    })
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = run_cli("study", "run", str(study_file), "--storage", storage,  # `python -m` puts cwd on the path first
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path / "copy",
                   env={"PYTHONPATH": str(tmp_path / "copy")}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="knn-iris", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert {t.user_attrs["family"] for t in trials} == {"knn"}
    assert all(0 < t.value <= 1 and 1 <= t.user_attrs["params"]["n_neighbors"] <= 30 for t in trials)


def test_one_module_subclassing_keras_family_makes_a_keras_family_searchable(tmp_path, write_study):
    """A Keras family is one module too: the base class brings seeding, curves and memory release."""
    assert "one_layer" not in FAMILIES
    shutil.copytree(REPO / "tuner", tmp_path / "copy" / "tuner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tuner" / "examples" / "tiny_keras_family.py",
                tmp_path / "copy" / "tuner" / "models" / "keras" / "one_layer.py")
    study_file = write_study({
        "name": "one-layer-iris", "data": {"source": "builtin:iris"}, "families": ["one_layer", "linear"],
        "split": {"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 3},
        "budget": {"trials": 2, "epochs": 2},  # the portfolio's two trials: linear, then the Keras family
    })
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = run_cli("study", "run", str(study_file), "--storage", storage,
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path / "copy",
                   env={"PYTHONPATH": str(tmp_path / "copy")}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="one-layer-iris", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["family"] for t in trials] == ["linear", "one_layer"]  # the portfolio: Keras last
    layered = [t for t in trials if t.user_attrs["family"] == "one_layer"]
    assert all(0 < t.value <= 1 and 8 <= t.user_attrs["params"]["units"] <= 64 for t in layered)
