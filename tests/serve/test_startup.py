"""Fixed costs: what a command imports. TensorFlow and Keras load only for a Keras family or member,
and `tuner predict` of a tree-only export reads the export without MLflow, with the predictions of
`mlflow.pyfunc.load_model(export).predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, tiny_study
from tests.serve.test_export import make_build
from tuner.core.errors import TunerError

KERAS_MODULES = ("tensorflow", "keras")
PROBE = """
import json, runpy, sys
sys.argv = ["tuner", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("tuner", run_name="__main__")
except SystemExit as stop:
    code = stop.code
finally:
    watched = ("tensorflow", "keras", "mlflow", "optuna")
    print("IMPORTED " + json.dumps(sorted(m for m in watched if m in sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def probed(*args: str, cwd=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`tuner ARGS` in a fresh process, and which of tensorflow / keras / mlflow / optuna it had imported at exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env=env, timeout=600)
    marker = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert marker, done.stderr[-3000:]
    return done, set(json.loads(marker[-1].removeprefix("IMPORTED ")))


def test_help_and_study_list_import_neither_tensorflow_nor_keras(tmp_path):
    shown, imported = probed("--help")
    assert shown.returncode == 0 and "predict" in shown.stdout
    assert not imported & {*KERAS_MODULES, "mlflow", "optuna"}, imported
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.storages.RDBStorage(storage)  # a store to read: `study list` never creates one
    listed, imported = probed("study", "list", "--storage", storage)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert not imported & set(KERAS_MODULES), imported


@pytest.mark.slow
def test_a_tree_only_study_runs_and_shows_without_tensorflow(tmp_path, write_study):
    spec = tiny_study("trees-only", data={"source": "builtin:iris"}, families=["linear", "random_forest", "xgboost"],
                      budget={"trials": 3, "rounds": 20, "patience": 2})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ran, imported = probed("study", "run", str(write_study(spec)), "--storage", storage,
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "3 complete" in ran.stdout
    assert not imported & set(KERAS_MODULES), imported
    shown, imported = probed("study", "show", "trees-only", "--storage", storage)
    assert shown.returncode == 0 and "leaderboard by family" in shown.stdout
    assert not imported & set(KERAS_MODULES), imported


def tree_only_ensemble():
    """A weighted linear + XGBoost blend of generated_mixed (numbers, categoricals with gaps, text)
    refitted on all but 40 rows; returns it and those raw rows, with gaps added."""
    from tuner.data import load_dataset, prepare_parts
    from tuner.ensemble import FittedEnsemble, FittedMember, WeightedAverage
    from tuner.models import FAMILIES, ProblemSpec
    from tests.ensemble_fixtures import XGB

    dataset = load_dataset("builtin:generated_mixed")
    rows = len(dataset.y)
    fit, parts, preprocessor, encoder = prepare_parts(dataset, "binary", np.arange(rows - 40),
                                                      {"rest": np.arange(rows - 40, rows)})
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=fit.X("tabular").shape[1],
                       max_rounds=20, **preprocessor.input_shapes())
    members = [FittedMember("s", trial, family, params, None, "tabular",
                            FAMILIES[family].build(params, spec).fit(fit.X("tabular"), fit.y))
               for trial, (family, params) in enumerate({"linear": {"C": 1.0}, "xgboost": XGB}.items())]
    ensemble = FittedEnsemble("weighted", "binary", "roc_auc", list(encoder.classes_), preprocessor, members,
                              WeightedAverage(np.array([0.4, 0.6])), dataset.fingerprint, "digest",
                              example=parts["rest"].raw[:5])
    unseen = parts["rest"].raw.copy()
    unseen.loc[0, "plan"] = None
    unseen.loc[1, "monthly_spend"] = np.nan
    unseen.loc[2, "region"] = None
    return ensemble, unseen


@pytest.mark.slow
def test_tuner_predict_of_a_tree_only_export_skips_mlflow_and_tensorflow_with_pyfuncs_predictions(
        tmp_path, tracking_uri):
    from tuner.serve.export import export_ensemble
    from tuner.serve.predict import conform, predict_file, read_export

    ensemble, rows = tree_only_ensemble()
    make_build(tmp_path, "trees", ensemble)
    folder = export_ensemble("trees", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    rows.assign(customer_id=range(len(rows))).to_csv(tmp_path / "customers.csv", index=False)

    done, imported = probed("predict", str(folder), str(tmp_path / "customers.csv"), "-o", str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ignored 1 column(s) the model does not take: customer_id" in done.stderr
    assert not imported & {*KERAS_MODULES, "mlflow"}, imported

    # the same rows through MLflow: exactly the same frame, dtypes included
    model = mlflow.pyfunc.load_model(str(folder))
    read = pd.read_csv(tmp_path / "customers.csv")
    conformed, _ = conform(read, read_export(folder).schema, "customers.csv")
    through_pyfunc = model.predict(conformed)
    direct = predict_file(folder, tmp_path / "customers.csv").frame
    pd.testing.assert_frame_equal(direct, through_pyfunc, check_exact=True)
    through_pyfunc.to_csv(tmp_path / "pyfunc.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out.csv"), pd.read_csv(tmp_path / "pyfunc.csv"), check_exact=True)
    np.testing.assert_array_equal(direct["prediction"], ensemble.predict_frame(rows)["prediction"])

    # MLmodel's model_config is checked as pyfunc checks it
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["config"]["weights"] = [1.0, 0.0]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(TunerError, match="model_config disagrees with the blend artifact 'weighted' on weights"):
        predict_file(folder, tmp_path / "customers.csv")


def test_a_scikit_learn_member_round_trips_through_skops_without_mlflow(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from tuner.models.estimators.member import SklearnMember

    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    member = SklearnMember(LogisticRegression(), classification=True).fit(X, y)
    saved = member.save(tmp_path / "member")
    assert sorted(p.name for p in saved.iterdir()) == ["estimator.skops", "member.json"]
    loaded = SklearnMember.load(saved)
    np.testing.assert_array_equal(loaded.predict_scores(X), member.predict_scores(X))
    assert loaded.classification


def test_main_skips_the_last_collection_after_predict_only(tmp_path, monkeypatch):
    """`tuner predict` holds no store, so `main` freezes the collector (0.4 s of teardown); a command
    with SQLite stores open keeps the pass that closes them."""
    import gc

    from tuner.cli import app as cli
    from tuner.cli.shared import EXIT
    from tuner.serve.predict import Predictions

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(EXIT, "holds_no_store", False)
    monkeypatch.setattr("tuner.serve.predict.predict_file", lambda *_: Predictions(pd.DataFrame({"prediction": [1]})))
    monkeypatch.setenv("TUNER_STORAGE", f"sqlite:///{tmp_path}/optuna.db")
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")  # a store for `study list` to read
    for argv, expected in [(["study", "list"], []), (["predict", "model", "rows.csv"], [True])]:
        monkeypatch.setattr(sys, "argv", ["tuner", *argv])
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 0 and frozen == expected, argv
