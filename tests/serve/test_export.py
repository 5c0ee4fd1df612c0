"""Export and serving: pyfunc round trip in a fresh process, registry versions, atomic failure,
`tuner predict` column checks, array models, and a real `mlflow models serve` answering HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from tests.tiny_study import run_in_process
from tests.ensemble_fixtures import learned_blends, tiny_ensemble
from tuner.serve import export as export_module
from tuner.ensemble import WeightedAverage
from tuner.ensemble.store import built_dir, write_build
from tuner.core.errors import DataError, StorageError, TunerError
from tuner.serve.export import MANIFEST, export_ensemble
from tuner.serve.predict import conform, predict_file


def make_build(root: Path, name: str, ensemble, *more, tracking_run_id: str | None = None) -> None:
    """What `tuner ensemble build` leaves behind, for `ensemble` (the chosen blend) and `more` blends,
    each under its own name (`weighted`, `stacked`, ...)."""
    metric = ensemble.metric
    blends = {}
    for blend in (ensemble, *more):
        weights = blend.combiner.weights.tolist() if isinstance(blend.combiner, WeightedAverage) else None
        blends[blend.name] = {"oof": 0.91, "test": 0.89, "folder": blend.name,
                              "members": [m.label for m in blend.members], "weights": weights}
    record = {
        "name": name, "studies": [f"{name}-study"], "task": ensemble.task, "metric": metric,
        "direction": "minimize" if metric in ("rmse", "mae", "log_loss") else "maximize",
        "chosen": ensemble.name, "best_single": "s#1 xgboost", "blends": blends,
        "members": [{**m.record(), "oof": round(0.8 + 0.01 * i, 2), "test": round(0.78 + 0.01 * i, 2)} for i, m in enumerate(ensemble.members)],
        "fingerprint": ensemble.fingerprint, "split_digest": ensemble.split_digest,
        "tracking_run_id": tracking_run_id, "built_at": "2026-11-23T18:00:00+00:00",
    }

    def save(folder: Path) -> None:
        for blend in (ensemble, *more):
            blend.save(folder / blend.name)

    write_build(name, record, save, root=root)


@pytest.fixture(scope="module")
def mixed():
    """A blend over generated_mixed (numbers, categoricals with gaps, a text note) and 40 unseen raw rows."""
    ensemble, rest = tiny_ensemble("builtin:generated_mixed", "binary", "roc_auc")
    rows = rest.raw.copy()
    rows.loc[0, "plan"] = None
    rows.loc[1, "monthly_spend"] = np.nan
    rows.loc[2, "region"] = None
    return ensemble, rows


def registry_versions(uri: str, name: str) -> list[str]:
    return sorted(str(v.version) for v in MlflowClient(uri).search_model_versions(f"name = '{name}'"))


def champion(uri: str, name: str) -> str:
    return str(MlflowClient(uri).get_model_version_by_alias(name, "champion").version)


def export_runs(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`tuner.role` = 'export'", run_view_type=ViewType.ACTIVE_ONLY)


def test_export_writes_model_manifest_and_a_champion_version(tmp_path, tracking_uri, mixed):
    ensemble, _ = mixed
    make_build(tmp_path, "churn", ensemble)
    result = export_ensemble("churn", root=tmp_path, tracking_uri=tracking_uri, refit="none")

    folder = tmp_path / "churn"
    assert result.folder == folder
    assert (folder / "code" / "tuner" / "ensemble" / "fitted.py").is_file()  # the model carries tuner's code
    assert (folder / "artifacts" / "weighted" / "ensemble.json").is_file()  # members in their own formats
    assert not list(folder.rglob("__pycache__"))
    requirements = (folder / "requirements.txt").read_text().split()
    for package, module in (("mlflow", mlflow), ("scikit-learn", __import__("sklearn")), ("xgboost", __import__("xgboost"))):
        assert f"{package}=={module.__version__}" in requirements
    signature = mlflow.models.Model.load(str(folder)).signature
    inputs = {c.name: c.type.name for c in signature.inputs.inputs}
    assert inputs == {"age": "double", "monthly_spend": "double", "plan": "string", "region": "string",
                      "support_note": "string"}
    assert {c.name: c.type.name for c in signature.outputs.inputs} == {
        "prediction": "string", "proba_no": "double", "proba_yes": "double"}
    config = mlflow.models.Model.load(str(folder)).flavors["python_function"]["config"]  # MLflow keeps model_config here
    assert config == {
        "blend": "weighted", "kind": "weighted", "task": "binary", "classes": ["no", "yes"],
        "members": [{"study": "s", "trial": 0, "family": "linear", "view": "tabular"},
                    {"study": "s", "trial": 1, "family": "xgboost", "view": "tabular"},
                    {"study": "s", "trial": 2, "family": "dense", "view": "tabular"}],
        "weights": [0.2, 0.5, 0.3],
        "preprocessing": {"kind": "table", "columns": {"age": "numeric", "monthly_spend": "numeric",
                                                       "plan": "categorical", "region": "categorical",
                                                       "support_note": "text"}}}

    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["blend"] == "weighted" and manifest["weights"] == [0.2, 0.5, 0.3]
    assert [(m["study"], m["trial"], m["family"]) for m in manifest["members"]] == [
        ("s", 0, "linear"), ("s", 1, "xgboost"), ("s", 2, "dense")]
    assert manifest["members"][1]["params"]["max_depth"] == 3 and "steps" in manifest["members"][1]
    assert manifest["members"][2]["scores"] == {"oof_roc_auc": 0.82, "test_roc_auc": 0.8}
    assert manifest["scores"] == {"oof_roc_auc": 0.91, "test_roc_auc": 0.89}
    assert manifest["fingerprint"] == ensemble.fingerprint and manifest["split_digest"] == "digest"
    assert set(manifest["versions"]) >= {"python", "tuner", "mlflow", "tensorflow", "xgboost", "lightgbm", "catboost",
                                         "scikit-learn"}
    assert manifest["exported_at"] and manifest["mlflow"]["version"] == "1"

    assert registry_versions(tracking_uri, "churn") == ["1"] and champion(tracking_uri, "churn") == "1"
    runs = export_runs(tracking_uri, "churn-study")
    assert [r.info.run_name for r in runs] == ["export/churn"] and runs[0].info.run_id == result.published.run_id
    assert runs[0].data.metrics == {"oof_roc_auc": 0.91, "test_roc_auc": 0.89}

    again = export_ensemble("churn", root=tmp_path, tracking_uri=tracking_uri, refit="none")
    assert again.published.version == "2" and champion(tracking_uri, "churn") == "2"
    assert json.loads((folder / MANIFEST).read_text())["mlflow"]["version"] == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".built", "churn"]


def test_export_logs_to_the_builds_run_when_it_exists(tmp_path, tracking_uri, mixed):
    ensemble, _ = mixed
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("churn-built-study", artifact_location=(tmp_path / "artifacts").as_uri())
    build_run = client.create_run(experiment_id, run_name="ensemble build").info.run_id
    make_build(tmp_path, "churn-built", ensemble, tracking_run_id=build_run)

    result = export_ensemble("churn-built", root=tmp_path, tracking_uri=tracking_uri, refit="none")

    assert result.published.run_id == build_run
    assert client.get_logged_model(result.published.model_id).source_run_id == build_run
    assert export_runs(tracking_uri, "churn-built-study") == []
    assert client.get_model_version("churn-built", "1").run_id == build_run


def test_the_registered_champion_loads_by_alias(tmp_path, tracking_uri, mixed, monkeypatch):
    ensemble, rows = mixed
    make_build(tmp_path, "churn-alias", ensemble)
    export_ensemble("churn-alias", root=tmp_path, tracking_uri=tracking_uri, refit="none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)

    model = mlflow.pyfunc.load_model("models:/churn-alias@champion")

    predicted = model.predict(rows)
    np.testing.assert_array_equal(predicted["prediction"], ensemble.predict_frame(rows)["prediction"])
    assert model.model_config == ensemble.serving_config() and model.model_config["weights"] == [0.2, 0.5, 0.3]
    with pytest.raises(Exception, match="model_config disagrees with the blend artifact 'weighted' on weights"):
        mlflow.pyfunc.load_model("models:/churn-alias@champion", model_config={"weights": [1.0, 0.0, 0.0]})


@pytest.mark.parametrize("where,failure,raised", [
    ("manifest", RuntimeError("disk full"), RuntimeError),
    ("upload", OSError("artifact store is read-only"), StorageError),
    ("registry", KeyboardInterrupt(), KeyboardInterrupt),
    ("rename", KeyboardInterrupt(), KeyboardInterrupt),
])
def test_a_failed_export_leaves_nothing_and_keeps_the_earlier_one(tmp_path, tracking_uri, mixed, monkeypatch,
                                                                  where, failure, raised):
    ensemble, _ = mixed
    name = f"churn-fails-at-{where}"
    make_build(tmp_path, name, ensemble)

    def fail(*args, **kwargs):
        raise failure

    targets = {"manifest": (export_module, "make_manifest"), "upload": (MlflowClient, "log_model_artifacts"),
               "registry": (MlflowClient, "create_model_version"), "rename": (export_module, "swap_folder")}
    with monkeypatch.context() as patch:
        patch.setattr(*targets[where], fail)
        with pytest.raises(raised):
            export_ensemble(name, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".built"]  # no folder, no staging left
    assert registry_versions(tracking_uri, name) == [] and export_runs(tracking_uri, f"{name}-study") == []

    first = export_ensemble(name, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    with monkeypatch.context() as patch:
        patch.setattr(*targets[where], fail)
        with pytest.raises(raised):
            export_ensemble(name, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".built", name]
    assert json.loads((tmp_path / name / MANIFEST).read_text()) == first.manifest
    assert registry_versions(tracking_uri, name) == ["1"] and champion(tracking_uri, name) == "1"
    assert [r.info.run_id for r in export_runs(tracking_uri, f"{name}-study")] == [first.published.run_id]
    logged = MlflowClient(tracking_uri).search_logged_models(
        [MlflowClient(tracking_uri).get_experiment_by_name(f"{name}-study").experiment_id])
    assert [m.model_id for m in logged] == [first.published.model_id]


def test_stacked_and_wide_and_deep_blends_export_and_load_with_identical_predictions(tmp_path, tracking_uri, mixed):
    _, rows = mixed  # the same 40 unseen rows, with gaps
    stacked, wide_deep, _ = learned_blends()
    make_build(tmp_path, "learned", stacked, wide_deep)

    for ensemble in (stacked, wide_deep):
        folder = export_ensemble("learned", blend=ensemble.name, out=tmp_path / f"learned-{ensemble.name}",
                                 root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
        model = mlflow.pyfunc.load_model(str(folder))

        assert model.model_config["kind"] == ensemble.name and model.model_config["weights"] is None
        predicted, expected = model.predict(rows), ensemble.predict_frame(rows)
        assert list(predicted.columns) == ["prediction", "proba_no", "proba_yes"]
        np.testing.assert_array_equal(predicted["prediction"], expected["prediction"])
        np.testing.assert_array_equal(predicted[["proba_no", "proba_yes"]], expected[["proba_no", "proba_yes"]])
    assert wide_deep.combiner.deep_view == "columns" and wide_deep.combiner.tree_index == 0  # dict inputs, leaves


def test_export_refuses_unknown_names_blends_and_foreign_folders(tmp_path, tracking_uri, mixed):
    ensemble, _ = mixed
    make_build(tmp_path, "churn-refusals", ensemble)
    with pytest.raises(TunerError, match="no built ensemble named 'nope'"):
        export_ensemble("nope", root=tmp_path, tracking_uri=tracking_uri, refit="none")
    with pytest.raises(TunerError, match="no blend 'wieghted'; did you mean 'weighted'"):
        export_ensemble("churn-refusals", blend="wieghted", root=tmp_path, tracking_uri=tracking_uri, refit="none")
    foreign = tmp_path / "my-notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TunerError, match="is not a tuner export"):
        export_ensemble("churn-refusals", out=foreign, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    assert (foreign / "notes.txt").read_text() == "keep me"
    shutil.rmtree(built_dir("churn-refusals", tmp_path) / "weighted")
    with pytest.raises(TunerError, match="blend 'weighted' of 'churn-refusals' is missing"):
        export_ensemble("churn-refusals", root=tmp_path, tracking_uri=tracking_uri, refit="none")
    assert registry_versions(tracking_uri, "churn-refusals") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".built", "my-notes"]


@pytest.mark.slow
def test_exported_model_loads_in_a_fresh_process_with_identical_predictions(tmp_path, tracking_uri, mixed):
    ensemble, rows = mixed
    make_build(tmp_path, "churn-fresh", ensemble)
    folder = export_ensemble("churn-fresh", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    rows.to_parquet(tmp_path / "rows.parquet")
    script = (
        "import sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])\n"
        "import tuner; print(tuner.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the model carries
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "rows.parquet"),
                           str(tmp_path / "out.parquet")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip().splitlines()[-1]).is_relative_to(folder / "code")

    served = pd.read_parquet(tmp_path / "out.parquet")
    expected = ensemble.predict_frame(rows)
    assert list(served.columns) == ["prediction", "proba_no", "proba_yes"]
    np.testing.assert_array_equal(served["prediction"], expected["prediction"])
    np.testing.assert_array_equal(served[["proba_no", "proba_yes"]], expected[["proba_no", "proba_yes"]])


@pytest.mark.slow
def test_tuner_predict_reads_a_csv_with_categoricals_and_missing_values(tmp_path, tracking_uri, mixed, monkeypatch,
                                                                       capsys):
    ensemble, rows = mixed
    make_build(tmp_path, "churn-csv", ensemble)
    folder = export_ensemble("churn-csv", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    data = rows.assign(customer_id=range(len(rows)))
    data.to_csv(tmp_path / "customers.csv", index=False)

    done = run_cli("predict", str(folder), str(tmp_path / "customers.csv"), "-o", str(tmp_path / "predictions.csv"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ignored 1 column(s) the model does not take: customer_id" in done.stderr
    predicted = pd.read_csv(tmp_path / "predictions.csv")
    expected = ensemble.predict_frame(pd.read_csv(tmp_path / "customers.csv").drop(columns="customer_id"))
    assert len(predicted) == len(rows)
    np.testing.assert_array_equal(predicted["prediction"], expected["prediction"])
    np.testing.assert_allclose(predicted["proba_yes"], expected["proba_yes"], rtol=1e-12)

    shown = run_in_process(monkeypatch, capsys, "predict", str(folder), str(tmp_path / "customers.csv"), "--show", "3")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "proba_yes" in shown.stdout and "3 of 40 rows shown" in shown.stdout


def test_tuner_predict_refuses_a_misspelled_column_in_one_line(tmp_path, tracking_uri, mixed):
    ensemble, rows = mixed
    make_build(tmp_path, "churn-bad", ensemble)
    folder = export_ensemble("churn-bad", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    rows.rename(columns={"region": "regoin"}).to_csv(tmp_path / "misspelled.csv", index=False)

    done = run_cli("predict", str(folder), str(tmp_path / "misspelled.csv"), "-o", str(tmp_path / "out.csv"))

    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "column 'region' is missing (found 'regoin': a misspelling?)" in done.stderr
    assert not (tmp_path / "out.csv").exists()
    rows.drop(columns="age").to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"column 'age' is missing \(the model takes age, monthly_spend"):
        predict_file(folder, tmp_path / "short.csv")
    rows.assign(age=["old"] + rows["age"].tolist()[1:]).to_csv(tmp_path / "words.csv", index=False)
    with pytest.raises(DataError, match="column 'age' must be numeric; row 1 holds 'old'"):
        predict_file(folder, tmp_path / "words.csv")
    with pytest.raises(TunerError, match="is not an exported model"):
        predict_file(tmp_path, tmp_path / "short.csv")
    rows.to_parquet(tmp_path / "rows.parquet")
    predicted = predict_file(folder, tmp_path / "rows.parquet", tmp_path / "predictions.parquet")
    assert pd.read_parquet(tmp_path / "predictions.parquet").equals(predicted.frame) and predicted.notes == []
    np.testing.assert_array_equal(predicted.frame["prediction"], ensemble.predict_frame(rows)["prediction"])


@pytest.mark.parametrize("infer_string", [True, False], ids=["pandas-3-strings", "pandas-2-object-strings"])
def test_none_and_nan_in_text_columns_reach_the_preprocessor_as_missing(mixed, infer_string):
    """`tuner predict`'s conversion and the preprocessor itself (what the HTTP server feeds) alike."""
    ensemble, rows = mixed
    strings = ["plan", "region", "support_note"]
    rows = rows.astype({c: object for c in strings})
    missing = {("plan", 0): None, ("region", 2): None, ("support_note", 3): None,
               ("plan", 4): np.nan, ("support_note", 5): np.nan}
    for (column, row), value in missing.items():
        rows.loc[row, column] = value
    assert rows["plan"][0] is None and rows["plan"][4] is not None
    as_nan = rows.assign(**{c: rows[c].where(rows[c].notna(), np.nan) for c in strings})
    schema = export_module.signature(ensemble).inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 deprecates the option that brings back pandas 2's strings
        try:
            pandas_strings = pd.option_context("future.infer_string", infer_string)
        except (KeyError, AttributeError):
            pytest.skip("this pandas no longer has pandas 2's object strings")
        with pandas_strings:
            conformed, _ = conform(rows, schema, "rows.csv")
            seen = {view: [ensemble.preprocessor.transform(frame, view) for frame in (as_nan, conformed, rows)]
                    for view in ("tabular", "columns")}

    for column, row in missing:
        assert pd.isna(conformed[column][row]), (column, conformed[column][row])
    assert conformed["plan"][1] == rows["plan"][1]
    for view, (expected, *received) in seen.items():
        for got in received:
            for name in (expected if isinstance(expected, dict) else [None]):
                np.testing.assert_array_equal(got[name] if name else got, expected[name] if name else expected)


@pytest.mark.slow
def test_an_image_model_takes_flattened_pixel_columns_or_an_array(tmp_path, tracking_uri):
    ensemble, rest = tiny_ensemble("builtin:digits", "multiclass", "accuracy")
    make_build(tmp_path, "digits", ensemble)
    folder = export_ensemble("digits", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    signature = mlflow.models.Model.load(str(folder)).signature
    assert signature.inputs.inputs[0].shape == (-1, 64) and signature.inputs.inputs[0].type == np.float64
    images = rest.raw
    expected = ensemble.predict_frame(images)
    model = mlflow.pyfunc.load_model(str(folder))

    flat = images.reshape(len(images), -1).astype(np.float64)
    from_array = model.predict(flat)
    from_frame = model.predict(pd.DataFrame(flat, columns=[f"pixel_{i}" for i in range(64)]))

    np.testing.assert_array_equal(from_array["prediction"], expected["prediction"].astype(np.int64))
    np.testing.assert_array_equal(from_frame.to_numpy(), from_array.to_numpy())
    assert from_array["prediction"].dtype == np.int64
    pd.DataFrame(flat.astype(int), columns=[f"pixel_{i}" for i in range(64)]).to_csv(tmp_path / "pixels.csv", index=False)
    from_csv = predict_file(folder, tmp_path / "pixels.csv").frame
    np.testing.assert_array_equal(from_csv["prediction"], from_array["prediction"])  # digits pixels are whole numbers
    pd.DataFrame(flat[:, :63]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="the model takes 64 value columns"):
        predict_file(folder, tmp_path / "short.csv")


@pytest.mark.slow
def test_a_regression_model_returns_values(tmp_path, tracking_uri):
    ensemble, rest = tiny_ensemble("builtin:diabetes", "regression", "rmse")
    make_build(tmp_path, "progression", ensemble)
    folder = export_ensemble("progression", root=tmp_path, tracking_uri=tracking_uri, refit="none").folder
    signature = mlflow.models.Model.load(str(folder)).signature
    assert [(c.name, c.type.name) for c in signature.outputs.inputs] == [("prediction", "double")]
    assert json.loads((folder / MANIFEST).read_text())["scores"] == {"oof_rmse": 0.91, "test_rmse": 0.89}

    predicted = mlflow.pyfunc.load_model(str(folder)).predict(rest.raw)

    assert list(predicted.columns) == ["prediction"]
    # a Keras member computes in float32 and its summation order follows the thread pool: values agree to
    # float32 precision (classification labels above compare exactly)
    np.testing.assert_allclose(predicted["prediction"], ensemble.predict_frame(rest.raw)["prediction"], rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_same_predictions(tmp_path, tracking_uri, mixed, monkeypatch, capsys):
    ensemble, rows = mixed
    root = tmp_path / "models"
    make_build(root, "churn-served", ensemble)
    monkeypatch.chdir(tmp_path)  # the export's output and files are checked, not its process: the entry point here
    exported = run_in_process(monkeypatch, capsys, "export", "churn-served", "--root", str(root),
                              "--tracking-uri", tracking_uri, "--refit", "none")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "registered models:/churn-served/1 (alias @champion)" in exported.stdout
    folder = root / "churn-served"
    assert (folder / MANIFEST).is_file() and not (tmp_path / "ensembles").exists()  # --root, as for ensemble build

    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager",
                               "local", "-p", str(port), "-h", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
                              env=env, cwd=tmp_path, start_new_session=True)
    try:
        _wait_for_ping(server, port, tmp_path / "serve.log")
        status, answer = _invoke(port, rows)
        misspelled_status, refusal = _invoke(port, rows.rename(columns={"region": "regoin"}))
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        server.wait(timeout=30)
        log.close()
    assert status == 200, answer
    answered = pd.DataFrame(json.loads(answer)["predictions"])
    expected = ensemble.predict_frame(rows)
    np.testing.assert_array_equal(answered["prediction"], expected["prediction"])
    np.testing.assert_allclose(answered[["proba_no", "proba_yes"]], expected[["proba_no", "proba_yes"]], rtol=1e-12)
    assert 400 <= misspelled_status < 500, refusal  # docs/export.md: HTTP 400 naming the column
    message = json.loads(refusal)["message"]
    assert "missing inputs ['region']" in message and "'regoin'" in message, message


def _invoke(port: int, rows: pd.DataFrame) -> tuple[int, str]:
    """POST rows to /invocations as `dataframe_split`; the HTTP status and the body, refusals included."""
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _wait_for_ping(server: subprocess.Popen, port: int, log: Path, limit_s: float = 240) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping in {limit_s:.0f}s:\n{log.read_text()[-3000:]}")
