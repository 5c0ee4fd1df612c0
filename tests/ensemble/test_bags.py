"""Ensembles from the search itself: bagged K-fold trials keep their out-of-fold predictions and fold
models; selection runs over every trial; the export averages fold models; nothing is refitted."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from tuner.study.trial_attrs import BAG_ATTR, OOF_ATTR
from tuner.study.trial_bags import TrialBags, artifact_root
from tuner.core.config import load_study_file
from tuner.data import SealedSplit, load_dataset, prepare_parts
from tuner.ensemble.build import build_ensemble
from tuner.core.metrics import METRICS
from tuner.models import FAMILIES
from tuner.study.sealed import open_sealed

from conftest import holdout_study, run_cli, tiny_study
from tiny_study import search

FAST = {"rounds": 20, "patience": 2, "epochs": 2}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """This module's own MLflow store: its ensemble builds must not show up in other modules' store."""
    return f"sqlite:///{tmp_path_factory.mktemp('bags-mlruns') / 'mlflow.db'}"


def bagged_study(name: str, families: list[str], trials: int, **overrides) -> dict:
    """tiny_study bagged 3-fold: the split names no validation part."""
    return tiny_study(name, split={"folds": 3, "seed": 1}, families=families, budget={"trials": trials, **FAST},
                      **overrides)


def test_a_split_naming_neither_validation_nor_folds_bags_five_fold(write_study):
    config, _ = load_study_file(write_study(tiny_study("default", split={"seed": 1})))
    assert config.split.folds == 5 and config.split.cross_validated
    explicit, _ = load_study_file(write_study(holdout_study("holdout")))
    assert explicit.split.folds is None and explicit.split.validation_share == 0.2


def test_the_first_trials_are_each_familys_library_defaults_cheapest_first(write_study, storage_url, tracking_uri):
    families = ["random_forest", "xgboost", "hist_boosting", "linear"]
    search(write_study(bagged_study("portfolio", families, trials=4)), storage_url, tracking_uri)
    sealed = open_sealed("portfolio", storage_url)
    spec = sealed.problem_spec(2, 30, None)
    trials = sorted(sealed.study.trials, key=lambda t: t.number)
    assert [t.user_attrs["family"] for t in trials] == ["linear", "hist_boosting", "xgboost", "random_forest"]
    for trial in trials:
        family = trial.user_attrs["family"]
        assert trial.user_attrs["params"] == FAMILIES[family].default_params(spec), family
        assert trial.user_attrs["portfolio"] == "default"


def test_bagged_trials_keep_float32_out_of_fold_predictions_across_a_resume(write_study, storage_url, tracking_uri):
    """Each row's stored prediction is the one the fold model that did not see it makes; each fold's
    recorded score is recomputed from those rows, and the trial's value is their mean."""
    path = write_study(bagged_study("resumed", ["linear", "xgboost"], trials=2))
    search(path, storage_url, tracking_uri)
    search(path, storage_url, tracking_uri, trials=4)
    sealed = open_sealed("resumed", storage_url)
    rows = sealed.split.search_rows()
    bags = TrialBags(artifact_root(storage_url))
    complete = sealed.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    folds = [prepare_parts(sealed.dataset, sealed.task, train_rows, {"val": val_rows})
             for train_rows, val_rows in sealed.split.fold_rows()]
    for trial in complete:
        oof = bags.oof(trial)
        assert oof.dtype == np.float32 and oof.shape == (len(rows), 2)
        models = bags.fold_models(trial)
        assert models is not None and len(models) == len(folds) == 3 and len(trial.user_attrs["fold_steps"]) == 3
        view = FAMILIES[trial.user_attrs["family"]].view
        for (_, parts, _, _), model, fold_score in zip(folds, models, trial.user_attrs["fold_scores"], strict=True):
            val = parts["val"]
            predicted = model.predict_scores(val.X(view))
            np.testing.assert_allclose(oof[np.searchsorted(rows, val.rows)], predicted, rtol=0, atol=1e-6)
            assert METRICS["roc_auc"].score(val.y, predicted) == pytest.approx(fold_score, abs=1e-12)
        assert trial.value == pytest.approx(np.mean(trial.user_attrs["fold_scores"]), abs=1e-12)
    assert (artifact_root(storage_url) / complete[0].user_attrs[BAG_ATTR]).exists()


def stored_oof_scores(sealed, storage_url: str) -> tuple[dict[int, np.ndarray], dict[int, float], np.ndarray]:
    """Every complete trial's stored out-of-fold predictions and their ROC AUC, recomputed here."""
    from tuner.data.preprocess import encode_target, fit_target_encoder

    rows = sealed.split.search_rows()
    y = encode_target(fit_target_encoder(sealed.dataset.y[rows], "binary"), sealed.dataset.y[rows])
    bags = TrialBags(artifact_root(storage_url))
    oof = {t.number: bags.oof(t).astype(np.float64)
           for t in sealed.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    return oof, {number: METRICS["roc_auc"].score(y, p) for number, p in oof.items()}, y


def test_only_the_best_bags_keep_their_fold_models(tmp_path, monkeypatch):
    import tuner.study.trial_bags as bags_module

    monkeypatch.setattr(bags_module, "KEEP_BAGS", 2)
    bags = TrialBags(tmp_path)
    records = []
    for number, (family, value) in enumerate([("linear", 0.7), ("xgboost", 0.9), ("xgboost", 0.8), ("xgboost", 0.6)]):
        artifact = f"bag-{number}"
        (tmp_path / artifact).write_bytes(b"x")
        records.append((number, value, {"family": family, BAG_ATTR: artifact}))
    bags.let_go(records, direction_sign=1)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["bag-0", "bag-1", "bag-2"]  # the best two, and linear's best although it ranks third


def test_selection_runs_over_every_trial_and_reports_scores_of_the_stored_predictions(
        write_study, storage_url, tracking_uri, tmp_path):
    """The record's out-of-fold scores are recomputed from the stored predictions of every trial:
    each member's, the best single trial's and the plain average's; the chosen blend scores best."""
    search(write_study(bagged_study("every", ["linear", "xgboost", "random_forest"], trials=6)),
           storage_url, tracking_uri)
    record = build_ensemble("every", ["every"], storage_url, tracking_uri, root=tmp_path)
    sealed = open_sealed("every", storage_url)
    oof, scores, y = stored_oof_scores(sealed, storage_url)
    assert record["bagged"] and record["candidates"] == len(oof) == 6
    number_of = {f"every#{t.number} {t.user_attrs['family']}": t.number for t in sealed.study.trials}
    for member in record["members"]:
        assert member["oof"] == pytest.approx(scores[member["trial"]], abs=1e-12), member["label"]
    best = max(scores, key=lambda n: (scores[n], -n))
    assert number_of[record["best_single_member"]] == best
    assert record["blends"]["best_single"]["oof"] == pytest.approx(scores[best], abs=1e-12)
    average = record["blends"]["average"]
    pooled = np.mean([oof[number_of[label]] for label in average["members"]], axis=0)
    assert average["oof"] == pytest.approx(METRICS["roc_auc"].score(y, pooled), abs=1e-12)
    assert record["blends"][record["chosen"]]["oof"] == max(blend["oof"] for blend in record["blends"].values())
    assert record["test_looks"] == {"every": 1} and record["rebuilt"] == []
    assert record["wide_deep"] is None and "training pass of its own" in record["wide_deep_note"]


def test_refit_replaces_each_bag_by_one_model_on_every_search_row_and_says_its_cost(write_study, storage_url,
                                                                                    tracking_uri, tmp_path):
    search(write_study(bagged_study("refit", ["linear", "xgboost"], trials=2)), storage_url, tracking_uri)
    record = build_ensemble("refit", ["refit"], storage_url, tracking_uri, root=tmp_path, refit=True)
    assert record["refit_seconds"] is not None and record["rebuilt"] == []
    assert {m["view"] for m in record["members"]} <= {"tabular", "native"}  # single models, not bags
    assert record["candidates"] == 2


def test_a_trial_whose_fold_models_were_let_go_is_rebuilt_from_its_fold_steps(write_study, storage_url,
                                                                               tracking_uri, tmp_path):
    from tuner.study.trial_bags import assemble_bags

    search(write_study(bagged_study("rebuilt", ["xgboost"], trials=1)), storage_url, tracking_uri)
    sealed = open_sealed("rebuilt", storage_url)
    [trial] = sealed.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    bags = TrialBags(artifact_root(storage_url))
    [stored], _ = assemble_bags(sealed, [trial], bags)
    (artifact_root(storage_url) / trial.user_attrs[BAG_ATTR]).unlink()
    [again], rebuilt = assemble_bags(sealed, [trial], bags)
    assert rebuilt == [trial.number]
    rows = sealed.dataset.X.iloc[:50]
    np.testing.assert_allclose(again.predict_scores(rows), stored.predict_scores(rows), atol=1e-6)


def test_picked_let_go_trials_past_the_rebuild_time_are_left_out_and_selection_runs_again(
        write_study, storage_url, tracking_uri, tmp_path):
    """`run-all` bounds the rebuilds by the time left: a let-go trial costs its recorded fit seconds."""
    from tuner.data.preprocess import encode_target, fit_target_encoder

    search(write_study(bagged_study("bounded", ["linear", "xgboost", "random_forest"], trials=6,
                                  sampler={"name": "random", "seed": 4})), storage_url, tracking_uri)
    sealed = open_sealed("bounded", storage_url)
    bags = TrialBags(artifact_root(storage_url))
    rows = sealed.split.search_rows()
    y = encode_target(fit_target_encoder(sealed.dataset.y[rows], "binary"), sealed.dataset.y[rows])
    complete = sealed.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    best = max(complete, key=lambda t: (METRICS["roc_auc"].score(y, bags.oof(t).astype(np.float64)), -t.number))
    let_go = {t.number for t in complete if t is not best}
    for trial in complete:
        if trial is not best:
            (artifact_root(storage_url) / trial.user_attrs[BAG_ATTR]).unlink()

    unbounded = build_ensemble("bounded", ["bounded"], storage_url, tracking_uri, root=tmp_path / "a")
    assert unbounded["left_out_for_time"] == [] and unbounded["candidates"] == len(complete)
    assert unbounded["rebuilt"] and set(unbounded["rebuilt"]) <= let_go  # the selection picked let-go trials
    bounded = build_ensemble("bounded", ["bounded"], storage_url, tracking_uri, root=tmp_path / "b", rebuild_s=0.0)
    assert bounded["rebuilt"] == [] and bounded["left_out_for_time"] and set(bounded["left_out_for_time"]) <= let_go
    assert [m["trial"] for m in bounded["members"]] == [best.number]  # every other trial needed a rebuild
    assert bounded["candidates"] == len(complete) - len(bounded["left_out_for_time"])
    roomy = build_ensemble("bounded", ["bounded"], storage_url, tracking_uri, root=tmp_path / "c",
                           rebuild_s=sum(t.user_attrs["duration_s"] for t in complete))
    assert roomy["left_out_for_time"] == [] and roomy["rebuilt"] == unbounded["rebuilt"]


def test_a_bagged_ensemble_exports_and_predicts_as_in_process(write_study, storage_url, tracking_uri, tmp_path):
    import mlflow

    from tuner.ensemble.fitted import FittedEnsemble
    from tuner.serve.export import export_ensemble

    search(write_study(bagged_study("exported", ["linear", "hist_boosting", "xgboost"], trials=4,
                                    data={"source": "builtin:generated_mixed"})), storage_url, tracking_uri)
    record = build_ensemble("exported", ["exported"], storage_url, tracking_uri, root=tmp_path)
    result = export_ensemble("exported", tracking_uri=tracking_uri, root=tmp_path, refit="none")
    dataset = load_dataset("builtin:generated_mixed")
    rows = dataset.X.iloc[:60].copy()
    rows.loc[:5, "plan"] = None  # a missing category reaches the boosters as missing
    in_process = FittedEnsemble.load(tmp_path / ".built" / "exported" / record["chosen"]).predict_frame(rows)
    served = mlflow.pyfunc.load_model(str(result.folder)).predict(rows)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), in_process, check_exact=False, atol=1e-9)
    csv = tmp_path / "new.csv"
    rows.to_csv(csv, index=False)
    predicted = run_cli("predict", str(result.folder), str(csv), "-o", str(tmp_path / "out.csv"))
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["proba_yes"], in_process["proba_yes"], atol=1e-9)


@pytest.mark.slow
def test_two_workers_store_every_trials_predictions_in_one_artifact_store(write_study, storage_url, tracking_uri):
    """A first process (this one) runs 2 trials, then two `--jobs` workers resume to 4: at least two
    processes wrote bags (the first one for sure; with --jobs 2 a fast worker may take every later trial)."""
    path = write_study(bagged_study("pair", ["linear", "random_forest"], trials=4))
    search(path, storage_url, tracking_uri, trials=2)  # the first writer needs no new interpreter
    done = run_cli("study", "run", str(path), "--trials", "4", "--jobs", "2", "--storage", storage_url,
                   "--tracking-uri", tracking_uri)
    assert done.returncode == 0, done.stderr
    sealed = open_sealed("pair", storage_url)
    complete = sealed.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4 and len({t.user_attrs["worker"] for t in complete}) >= 2
    bags = TrialBags(artifact_root(storage_url))
    assert all(bags.oof(t).shape[0] == len(sealed.split.search_rows()) for t in complete)
    assert all(OOF_ATTR in t.user_attrs for t in complete)
    SealedSplit.from_record(sealed.study.user_attrs["tuner.split"])  # one sealed split for both workers


def test_the_search_best_reaches_the_export_when_the_cheap_family_is_poor(write_study, storage_url, tracking_uri,
                                                                          tmp_path):
    """An XOR target: a linear model is at chance, a booster is not; whatever the blend, the booster is in it."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.uniform(-1, 1, (400, 2)), columns=["a", "b"])
    frame["noise"] = rng.normal(size=400)
    frame["y"] = np.where(frame["a"] * frame["b"] > 0, "same", "opposite")
    frame.to_csv(tmp_path / "xor.csv", index=False)
    path = write_study(bagged_study("xor", ["linear", "xgboost"], trials=3, data={"source": "xor.csv", "target": "y"}))
    search(path, storage_url, tracking_uri)
    record = build_ensemble("xor", ["xor"], storage_url, tracking_uri, root=tmp_path / "ens")
    best = max(record["members"], key=lambda m: m["oof"])
    assert best["family"] == "xgboost" and best["oof"] > 0.9
    linear = [m for m in record["members"] if m["family"] == "linear"]
    assert all(m["oof"] < 0.7 for m in linear)
    assert best["label"] in record["blends"][record["chosen"]]["members"]


def test_xgboost_and_hist_boosting_split_categoricals_natively_and_keep_missing_values():
    from tuner.data.preprocess import FeaturePreprocessor

    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0] * 30, "colour": ["red", "blue", None, "green"] * 30})
    y = np.array([0, 1, 1, 0] * 30)
    prep = FeaturePreprocessor().fit(frame)
    native = prep.transform(frame, "native")
    assert native.dtype == np.float32 and native.shape == (120, 2)
    assert np.isnan(native[1, 0]) and np.isnan(native[2, 1])  # a missing number and a missing category stay missing
    assert set(np.unique(native[~np.isnan(native[:, 1]), 1])) == {0.0, 1.0, 2.0}  # one code per colour
    unseen = prep.transform(pd.DataFrame({"x": [2.0], "colour": ["purple"]}), "native")
    assert np.isnan(unseen[0, 1])
    shapes = prep.input_shapes()
    assert shapes["native_categorical"] == (1,)
    from tuner.models import ProblemSpec

    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=2, max_rounds=30, patience=2, **shapes)
    for name in ("xgboost", "hist_boosting"):
        family = FAMILIES[name]
        assert family.view_for(spec) == "native"
        member = family.build(family.default_params(spec), spec).fit(native[:80], y[:80], native[80:], y[80:])
        assert np.isfinite(member.predict_scores(native)).all()
    assert member.model_.is_categorical_.tolist() == [False, True]
    xgb = FAMILIES["xgboost"].build(FAMILIES["xgboost"].default_params(spec), spec).fit(native, y)
    assert xgb.model_.get_booster().feature_types == ["q", "c"]


def test_the_linear_familys_default_is_scikit_learns_default_model():
    """The portfolio's first linear trial is exactly LogisticRegression() / Ridge() on the same inputs."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from tuner.models import ProblemSpec

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 5)), rng.integers(0, 3, 200)
    for task, reference, target in (("multiclass", LogisticRegression(max_iter=2000), y),
                                    ("regression", Ridge(), X[:, 0] * 2.0)):
        spec = ProblemSpec(task=task, metric="accuracy" if task == "multiclass" else "rmse", n_classes=3,
                           n_features=5)
        member = FAMILIES["linear"].build(FAMILIES["linear"].default_params(spec), spec).fit(X, target)
        expected = reference.fit(X, target)
        got = member.predict_scores(X)
        np.testing.assert_allclose(got, expected.predict_proba(X) if task == "multiclass" else expected.predict(X))


def test_vectorised_scores_match_each_metric():
    from tuner.core.metrics import score_many

    rng = np.random.default_rng(2)
    y2, y3, yr = rng.integers(0, 2, 300), rng.integers(0, 3, 300), rng.normal(size=300)
    cases = {"roc_auc": (y2, rng.dirichlet([1, 1], (4, 300))), "accuracy": (y3, rng.dirichlet([1, 1, 1], (4, 300))),
             "log_loss": (y3, rng.dirichlet([1, 1, 1], (4, 300))), "rmse": (yr, rng.normal(size=(4, 300))),
             "mae": (yr, rng.normal(size=(4, 300))), "r2": (yr, rng.normal(size=(4, 300)))}
    for name, (y, stacked) in cases.items():
        expected = [METRICS[name].score(y, p) for p in stacked]
        np.testing.assert_allclose(score_many(METRICS[name], y, stacked), expected, rtol=1e-10, err_msg=name)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_bagged_export_as_in_process(write_study, storage_url, tracking_uri, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.serve.test_export import _free_port, _invoke, _wait_for_ping

    from tuner.ensemble.fitted import FittedEnsemble
    from tuner.serve.export import export_ensemble

    search(write_study(bagged_study("served-bag", ["linear", "xgboost"], trials=2,
                                    data={"source": "builtin:generated_mixed"})), storage_url, tracking_uri)
    record = build_ensemble("served-bag", ["served-bag"], storage_url, tracking_uri, root=tmp_path)
    folder = export_ensemble("served-bag", tracking_uri=tracking_uri, root=tmp_path, refit="none").folder
    rows = load_dataset("builtin:generated_mixed").X.iloc[:20]
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder),
                                   "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"], stdout=log,
                                  stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        try:
            _wait_for_ping(server, port, tmp_path / "serve.log")
            status, answer = _invoke(port, rows)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    assert status == 200, answer
    answered = pd.DataFrame(json.loads(answer)["predictions"])
    expected = FittedEnsemble.load(tmp_path / ".built" / "served-bag" / record["chosen"]).predict_frame(rows)
    np.testing.assert_array_equal(answered["prediction"], expected["prediction"])
    np.testing.assert_allclose(answered["proba_yes"], expected["proba_yes"], rtol=1e-9)
