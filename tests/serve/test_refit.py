"""The export learns from every row: after the one test look, the chosen blend's members are trained
again on the search rows and the sealed test rows (a fresh K-fold bag by default, one model each
with `single`), the combiner kept; `none` exports the blend exactly as it was scored."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from tuner.data import TEST, load_dataset
from tuner.ensemble.build import build_ensemble
from tuner.ensemble.fitted import RAW_VIEW, FittedEnsemble
from tuner.models.bagged_member import BaggedMember
from tuner.serve.export import MANIFEST, export_ensemble
from tuner.study.sealed import open_sealed

from conftest import holdout_study, run_cli, tiny_study
from tiny_study import run_in_process, search

FAST = {"rounds": 20, "patience": 2, "epochs": 2}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('refit-mlruns') / 'mlflow.db'}"


def spy_on_refits(monkeypatch) -> list[np.ndarray]:
    """The dataset rows each refitted model trained on, in order."""
    from tuner.study import trial_bags

    seen, refit_fold = [], trial_bags.refit_fold

    def spy(family, trial, train, spec, steps, rounds=None):
        seen.append(train.rows)
        return refit_fold(family, trial, train, spec, steps, rounds)

    monkeypatch.setattr(trial_bags, "refit_fold", spy)
    return seen


def test_the_export_bags_every_row_and_none_exports_the_blend_as_scored(write_study, storage_url, tracking_uri,
                                                                         tmp_path, monkeypatch, capsys):
    path = write_study(tiny_study("every", split={"folds": 3, "seed": 1}, families=["linear", "xgboost"],
                                  data={"source": "builtin:generated_mixed"}, budget={"trials": 3, **FAST}))
    search(path, storage_url, tracking_uri)
    record = build_ensemble("every", ["every"], storage_url, tracking_uri, root=tmp_path)
    sealed = open_sealed("every", storage_url)
    every, test_rows = len(sealed.dataset.y), sealed.split.rows(TEST)
    rows = load_dataset("builtin:generated_mixed").X.iloc[:80]
    scored = FittedEnsemble.load(tmp_path / ".built" / "every" / record["chosen"]).predict_frame(rows)

    trained_rows = spy_on_refits(monkeypatch)
    result = export_ensemble("every", tracking_uri=tracking_uri, root=tmp_path, storage_url=storage_url)
    members = len(record["blends"][record["chosen"]]["members"])
    assert len(trained_rows) == 3 * members  # a fresh 3-fold bag per member
    for start in range(0, len(trained_rows), 3):
        bag = trained_rows[start:start + 3]
        assert sorted(np.concatenate([np.setdiff1d(np.arange(every), rows) for rows in bag])) == list(range(every))
        assert all(len(np.intersect1d(rows, test_rows)) > 0 for rows in bag)  # the sealed rows train each fold model
    trained_on = result.manifest["trained_on"]
    assert trained_on["refit"] == "bag" and trained_on["includes_test_rows"] and trained_on["folds"] == 3
    assert trained_on["rows"] == every and trained_on["test_rows"] == len(test_rows)
    assert trained_on["description"] == f"all {every} rows (search + sealed test), 3-fold bag"
    assert "without the sealed test rows" in trained_on["scores"]
    assert result.manifest["scores"] == {f"{s}_roc_auc": record["blends"][record["chosen"]][s] for s in ("oof", "test")}
    for label, rounds in trained_on["steps"].items():  # boosters: the fold's rounds scaled to the rows
        if "xgboost" in label:
            steps = sealed.study.trials[int(label.split("#")[1].split()[0])].user_attrs["fold_steps"]
            assert all(r >= s for r, s in zip(rounds, steps)) and rounds != steps

    model = mlflow.pyfunc.load_model(str(result.folder))
    refitted = model.predict(rows).reset_index(drop=True)
    assert {m["view"] for m in model.model_config["members"]} == {RAW_VIEW}
    assert not np.allclose(refitted["proba_yes"], scored["proba_yes"])  # trained on more rows: other predictions
    tag = mlflow.MlflowClient(tracking_uri).get_model_version("every", result.published.version).tags
    assert tag["tuner.trained_on"] == trained_on["description"]
    csv = tmp_path / "new.csv"
    rows.to_csv(csv, index=False)
    predicted = run_in_process(monkeypatch, capsys, "predict", str(result.folder), str(csv), "-o",
                               str(tmp_path / "out.csv"))
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["proba_yes"], refitted["proba_yes"], atol=1e-9)

    as_scored = export_ensemble("every", out=tmp_path / "as-scored", tracking_uri=tracking_uri, root=tmp_path,
                                refit="none")
    pd.testing.assert_frame_equal(mlflow.pyfunc.load_model(str(as_scored.folder)).predict(rows).reset_index(drop=True),
                                  scored, check_exact=True)
    assert as_scored.manifest["trained_on"]["refit"] == "none"
    assert not as_scored.manifest["trained_on"]["includes_test_rows"]
    assert as_scored.manifest["trained_on"]["rows"] == len(sealed.split.search_rows())

    exported = run_cli("export", "every", "--out", str(tmp_path / "single"), "--refit", "single", "--root",
                       str(tmp_path), "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert exported.returncode == 0, exported.stderr
    assert f"trained on all {every} rows (search + sealed test), one model per member" in exported.stdout
    manifest = json.loads((tmp_path / "single" / MANIFEST).read_text())
    assert manifest["trained_on"]["refit"] == "single" and manifest["trained_on"]["folds"] is None
    assert all(len(rounds) == 1 for rounds in manifest["trained_on"]["steps"].values() if rounds)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "single")).unwrap_python_model().ensemble
    assert not any(isinstance(m.member, BaggedMember) for m in loaded.members)
    shown = run_in_process(monkeypatch, capsys, "ensemble", "show", "every", "--root", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert f"trained on all {every} rows (search + sealed test), 3-fold bag" in shown.stdout


def test_a_holdout_studys_export_is_trained_on_every_row_too(write_study, storage_url, tracking_uri, tmp_path,
                                                             monkeypatch):
    path = write_study(holdout_study("every-holdout", families=["linear", "xgboost"], budget={"trials": 2, **FAST}))
    search(path, storage_url, tracking_uri)
    build_ensemble("every-holdout", ["every-holdout"], storage_url, tracking_uri, root=tmp_path, folds=2,
                   wide_deep=False)
    trained_rows = spy_on_refits(monkeypatch)
    result = export_ensemble("every-holdout", tracking_uri=tracking_uri, root=tmp_path, storage_url=storage_url)
    every = len(open_sealed("every-holdout", storage_url).dataset.y)
    assert result.manifest["trained_on"]["rows"] == every and result.manifest["trained_on"]["folds"] == 2
    assert trained_rows and all(len(rows) < every for rows in trained_rows)
    assert set(np.concatenate(trained_rows)) == set(range(every))


def test_the_refit_is_planned_from_the_members_fit_seconds(storage_url):
    from optuna.trial import TrialState, create_trial

    from tuner.pipeline.clock import SAFETY_S, plan_refit, refit_seconds

    study = optuna.create_study(study_name="planned", storage=storage_url, direction="maximize")
    study.set_user_attr("tuner.split", {"n_rows": 100, "n_train": 80, "n_val": 0, "n_test": 20, "n_folds": 4,
                                        "n_repeats": 1})
    for family, seconds in [("linear", 2.0), ("xgboost", 3.0), ("random_forest", 50.0)]:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, user_attrs={"family": family,
                                                                                       "duration_s": seconds}))
    build = {"chosen": "weighted", "blends": {"weighted": {"members": ["planned#0 linear", "planned#1 xgboost"]}},
             "members": [{"label": f"planned#{n} {f}", "trial": n}
                         for n, f in enumerate(["linear", "xgboost", "random_forest"])]}
    assert refit_seconds("planned", storage_url, build, "bag") == pytest.approx(5.0 * 100 / 80)  # 4 fits as before
    assert refit_seconds("planned", storage_url, build, "single") == pytest.approx(5.0 / 4 * 100 / 80)
    assert plan_refit("planned", storage_url, build, None, 1.0) == ("bag", None)
    assert plan_refit("planned", storage_url, build, 1.0 + SAFETY_S + 6.25, 1.0) == ("bag", None)
    mode, why = plan_refit("planned", storage_url, build, 1.0 + SAFETY_S + 2.0, 1.0)
    assert mode == "single" and "a 6 s bag needed, 2 s left; one model per member" in why
    mode, why = plan_refit("planned", storage_url, build, 1.0 + SAFETY_S + 1.0, 1.0)
    assert mode == "none" and why == "refit on every row: a 6 s bag needed, 1 s left; exported as scored"


def test_run_all_exports_as_scored_when_the_budget_cannot_pay_for_the_refit(write_study, storage_url, tracking_uri,
                                                                           tmp_path, monkeypatch):
    from tuner.pipeline import clock
    from tuner.pipeline.run_all import run_all

    monkeypatch.setattr(clock, "refit_seconds", lambda *args: 1e6)
    path = write_study(tiny_study("no-refit", split={"folds": 3, "seed": 1}, families=["linear"],
                                  budget={"trials": 2, **FAST}))
    result = run_all(path, budget=600, storage_url=storage_url, tracking_uri=tracking_uri,
                     ensembles_root=tmp_path / "ens")
    assert result.skipped["refit"].startswith("refit on every row: a 1000000 s bag needed")
    assert result.skipped["refit"].endswith("exported as scored")
    trained_on = result.export.manifest["trained_on"]
    assert trained_on["refit"] == "none" and trained_on["why"] == result.skipped["refit"]
