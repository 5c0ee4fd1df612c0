"""Stacked and wide-and-deep combiners round-trip; `tuner ensemble build` end to end and its refusals."""

import json
import sys
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tuner.data import load_dataset, prepare_parts
from tuner.ensemble import FittedEnsemble
from tuner.ensemble.blends import DeepPlan, WideAndDeep, fit_stacked, fit_wide_deep
from tuner.ensemble.store import read_build, write_build
from tuner.core.errors import SplitMismatchError

from conftest import holdout_study, run_cli, tiny_study
from ensemble_fixtures import WIDE_DEEP_MEMBER, fitted_members, stand_in_source, xgboost_candidate
from tiny_study import run_in_process, search

DENSE = {"layers": 1, "units": 8, "activation": "relu", "dropout": 0.0, "regularizer": "none", "batch_norm": False,
         "optimizer": "adam", "learning_rate": 0.01, "batch_size": 32}


@pytest.mark.parametrize("source,task,metric", [("builtin:breast_cancer", "binary", "roc_auc"),
                                                ("builtin:diabetes", "regression", "rmse")])
def test_stacked_and_wide_deep_blends_round_trip_exactly(tmp_path, source, task, metric):
    dataset = load_dataset(source)
    members, preprocessor, encoder, rest = fitted_members(task, metric, dataset)
    fit, _, _, _ = prepare_parts(dataset, task, np.arange(0, len(dataset.y) - 40), {})
    scores = [m.member.predict_scores(fit.X(m.view)) for m in members]
    classes = None if encoder is None else list(encoder.classes_)
    stacked = FittedEnsemble("stacked", task, metric, classes, preprocessor, members,
                             fit_stacked(scores, fit.y, task), dataset.fingerprint, "digest",
                             example=rest.raw[:3])
    src = stand_in_source(task, metric)
    wide = fit_wide_deep(xgboost_candidate(src), DeepPlan(src, "dense", DENSE, 2, "test"), fit, encoder)
    assert isinstance(wide.combiner, WideAndDeep) and wide.combiner.leaf_encoder is not None
    wide_deep = FittedEnsemble("wide_deep", task, metric, classes, preprocessor, wide.members, wide.combiner,
                               dataset.fingerprint, "digest", example=rest.raw[:3])
    for ensemble in (stacked, wide_deep):
        before = ensemble.predict_scores(rest.raw)
        loaded = FittedEnsemble.load(ensemble.save(tmp_path / ensemble.name))
        assert type(loaded.combiner) is type(ensemble.combiner)
        np.testing.assert_allclose(loaded.predict_scores(rest.raw), before, rtol=1e-5, atol=1e-6)
        if task == "binary":
            np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-6)
        else:
            assert before.shape == (40,) and np.isfinite(before).all()


def test_a_wide_deep_member_lends_its_hidden_layer_not_its_logits_as_the_deep_part(tmp_path):
    """The `wide_deep` family ends in an Activation over summed logits; the blend must read the layer before."""
    dataset = load_dataset("builtin:generated_mixed")
    rows = np.arange(300)
    fit, _, preprocessor, encoder = prepare_parts(dataset, "binary", rows, {})
    src = stand_in_source("binary", "roc_auc")
    wide = fit_wide_deep(None, DeepPlan(src, "wide_deep", WIDE_DEEP_MEMBER, 2, "s#0 wide_deep"), fit, encoder)

    combiner = wide.combiner
    assert combiner.deep_part["family"] == "wide_deep" and combiner.deep_view == "columns"
    assert combiner.model.get_layer("deep").input.shape[-1] == WIDE_DEEP_MEMBER["units"]
    ensemble = FittedEnsemble("wide_deep", "binary", "roc_auc", list(encoder.classes_), preprocessor, wide.members,
                              combiner, dataset.fingerprint, "digest", example=fit.raw[:3])
    loaded = FittedEnsemble.load(ensemble.save(tmp_path / "wide_deep"))
    unseen = dataset.X.iloc[300:340]
    np.testing.assert_allclose(loaded.predict_scores(unseen), ensemble.predict_scores(unseen), rtol=1e-5, atol=1e-6)


def test_a_build_whose_last_rename_fails_puts_the_earlier_build_back(tmp_path, monkeypatch):
    write_build("kept", {"name": "kept", "look": 1}, lambda folder: (folder / "weighted").mkdir(), root=tmp_path)
    rename = Path.rename

    def staging_cannot_land(self, target):
        if Path(target).name == "kept" and not self.name.startswith(".kept-old-"):
            raise OSError("disk full")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", staging_cannot_land)
    with pytest.raises(OSError, match="disk full"):
        write_build("kept", {"name": "kept", "look": 2}, lambda folder: (folder / "weighted").mkdir(), root=tmp_path)

    assert read_build("kept", tmp_path) == {"name": "kept", "look": 1}
    assert [p.name for p in (tmp_path / ".built").iterdir()] == ["kept"]  # no staging, nothing stranded aside


def _interrupted_build(monkeypatch, capsys, where: str, *args: str) -> tuple[int, str]:
    """`tuner ensemble build ARGS` in-process, with Ctrl-C pressed inside `tuner.ensemble.<where>`."""
    from tuner.cli import app as cli

    def ctrl_c(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"tuner.ensemble.{where}", ctrl_c)
    monkeypatch.setattr(sys, "argv", ["tuner", "ensemble", "build", *args])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    return stopped.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_during_a_build_says_whether_the_test_look_was_counted(write_study, storage_url, tracking_uri,
                                                                       tmp_path, monkeypatch, capsys):
    search(write_study(holdout_study("stopped", families=["linear", "xgboost"],
                                     budget={"trials": 2, "epochs": 2, "rounds": 10})), storage_url, tracking_uri)
    args = ("stopped", "--from", "stopped", "--folds", "2", "--per-family", "1", "--root", str(tmp_path / "ens"),
            "--storage", storage_url, "--tracking-uri", tracking_uri)

    with monkeypatch.context() as patch:
        status, err = _interrupted_build(patch, capsys, "build.out_of_fold", *args)
    assert status == 130 and err.count("\n") == 1
    assert "before the sealed test split was looked at: no test look was counted" in err
    assert "finished trials" not in err and f"rebuild with: tuner ensemble build {' '.join(args)}" in err
    assert "tuner.test_looks" not in optuna.load_study(study_name="stopped", storage=storage_url).user_attrs

    with monkeypatch.context() as patch:
        status, err = _interrupted_build(patch, capsys, "judge.take_rows", *args)  # reads the test rows, after counting
    assert status == 130
    assert "after the sealed test split was looked at: that look stays counted (stopped: 1 test look(s))" in err
    assert optuna.load_study(study_name="stopped", storage=storage_url).user_attrs["tuner.test_looks"] == 1
    assert not (tmp_path / "ens" / ".built" / "stopped").exists()


def test_holdout_and_bagged_builds_blend_one_out_of_fold_record_through_one_function(write_study, storage_url,
                                                                                      tracking_uri, monkeypatch):
    """Given the same out-of-fold matrices, the holdout path (refits on K-1 folds) and the K-fold path
    (the trials' stored bags) hand the same kind of record to the same blend function, and come out
    with the same members, weights, out-of-fold scores and chosen blend."""
    import tuner.ensemble.bagged_trials as bagged
    import tuner.ensemble.build as build
    from tuner.ensemble.blending import OutOfFold, blend_out_of_fold
    from tuner.ensemble.candidates import gather_candidates
    from tuner.study.sealed import open_sealed

    search(write_study(tiny_study("same-oof", split={"folds": 3, "seed": 1}, families=["linear", "xgboost"],
                                     budget={"trials": 4, "epochs": 2, "rounds": 10, "patience": 2})),
              storage_url, tracking_uri)
    source = open_sealed("same-oof", storage_url)
    records = []

    def recorded(*args, **kwargs):
        records.append(args[1])
        return blend_out_of_fold(*args, **kwargs)

    for module in (bagged, build):
        monkeypatch.setattr(module, "blend_out_of_fold", recorded)
    from_bags, _, _ = bagged.blend_bagged_trials(source, lambda message: None, refit=True)
    stored = dict(zip(records[0].labels, records[0].predictions))
    monkeypatch.setattr(build, "fold_ids", lambda *args: records[0].folds)
    monkeypatch.setattr(build, "out_of_fold", lambda dataset, task, rows, ids, fitters: {l: stored[l] for l in fitters})
    candidates = gather_candidates([source], per_family=4)
    from_refits, _, _ = build.blend_holdout([source], candidates, 4, 3, 1.0, False, lambda message: None)

    bags_record, refits_record = records
    assert type(bags_record) is type(refits_record) is OutOfFold
    assert refits_record.labels == bags_record.labels and refits_record.scores == bags_record.scores
    for field in ("predictions", "y", "folds", "rows"):
        np.testing.assert_array_equal(getattr(refits_record, field), getattr(bags_record, field))
    assert [r["label"] for r in from_refits.rows] == [r["label"] for r in from_bags.rows]
    assert from_refits.weighting == from_bags.weighting
    np.testing.assert_allclose(from_refits.weights, from_bags.weights)
    assert from_refits.oof_scores == pytest.approx(from_bags.oof_scores)
    assert from_refits.chosen == from_bags.chosen
    assert set(from_refits.ensembles) == set(from_bags.ensembles) == {"best_single", "average", "weighted", "stacked"}


def _sealed_study(write_study, storage_url, name, seed):
    from tuner.core.config import load_study_file
    from tuner.study.sealed import open_study

    path = write_study(tiny_study(name, split={"test_fraction": 0.2, "validation_fraction": 0.2, "seed": seed}),
                       f"{name}.yaml")
    config, base_dir = load_study_file(path)
    open_study(config, base_dir, storage_url)


def test_studies_with_different_splits_are_refused_with_one_line_and_nothing_written(
        write_study, storage_url, tracking_uri, tmp_path):
    _sealed_study(write_study, storage_url, "seed-one", 1)
    _sealed_study(write_study, storage_url, "seed-two", 2)
    from tuner.ensemble.build import build_ensemble

    with pytest.raises(SplitMismatchError, match="studies 'seed-one' and 'seed-two' do not share data and split"):
        build_ensemble("mixed", ["seed-one", "seed-two"], storage_url, tracking_uri, root=tmp_path / "ens")
    result = run_cli("ensemble", "build", "mixed", "--from", "seed-one", "--from", "seed-two", "--root",
                     str(tmp_path / "ens"), "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'seed-one' and 'seed-two'" in result.stderr
    assert not (tmp_path / "ens").exists()
    client = MlflowClient(tracking_uri)  # shared by this worker's tests: others may have built ensembles in it
    experiment = client.get_experiment_by_name("ensembles")
    assert experiment is None or not client.search_runs([experiment.experiment_id], "tags.ensemble = 'mixed'")
    for name in ("seed-one", "seed-two"):
        assert "tuner.test_looks" not in optuna.load_study(study_name=name, storage=storage_url).user_attrs


@pytest.mark.slow
def test_convnet_and_xgboost_blend_on_digits_through_the_cli(write_study, storage_url, tracking_uri, tmp_path,
                                                             monkeypatch, capsys):
    """A Keras member on images and an XGBoost member on the flattened pixels, blended end to end (two trials:
    XGBoost's library default, which the portfolio runs first, and a sampled convnet: the convnet has no
    default, and sampler seed 68 draws a one-block one (quick to build and trace) whose learning rate learns
    the digits in 2 epochs, so the selection keeps both). The commands run through the CLI's entry point
    in this process: what is checked is their output, not a new interpreter."""
    spec = holdout_study("digits-blend", data={"source": "builtin:digits"}, metric="accuracy",
                      families=["convnet", "xgboost"], budget={"trials": 2, "epochs": 2, "rounds": 8, "patience": 2},
                      sampler={"name": "random", "seed": 68})
    search(write_study(spec), storage_url, tracking_uri)
    root = tmp_path / "ensembles"
    result = run_in_process(monkeypatch, capsys, "ensemble", "build", "digits", "--from", "digits-blend",
                            "--folds", "2", "--per-family", "1", "--root", str(root), "--storage", storage_url,
                            "--tracking-uri", tracking_uri)
    assert result.returncode == 0, result.stderr
    for heading in ("oof_accuracy", "test_accuracy", "gap", "best_single", "weighted", "stacked", "wide_deep"):
        assert heading in result.stdout
    record = json.loads((root / ".built" / "digits" / "build.json").read_text())
    assert {m["family"] for m in record["members"]} == {"convnet", "xgboost"}
    assert {m["view"] for m in record["members"]} == {"image", "native"}  # XGBoost reads the native view
    assert record["chosen"] == max(record["blends"], key=lambda b: record["blends"][b]["oof"]) or \
        record["blends"][record["chosen"]]["oof"] == max(r["oof"] for r in record["blends"].values())
    assert record["wide_deep"]["deep_part"]["family"] == "convnet" and record["wide_deep"]["tree"].endswith("xgboost")
    assert record["test_looks"] == {"digits-blend": 1}
    assert optuna.load_study(study_name="digits-blend", storage=storage_url).user_attrs["tuner.test_looks"] == 1
    for blend, row in record["blends"].items():
        assert 0.0 <= row["test"] <= 1.0 and row["test_se"] > 0
    weighted = record["blends"]["weighted"]["weights"]
    assert min(weighted) >= 0 and sum(weighted) == pytest.approx(1.0)

    chosen = FittedEnsemble.load(root / ".built" / "digits" / record["chosen"])
    digits = load_dataset("builtin:digits")
    frame = chosen.predict_frame(digits.X[:7])
    assert len(frame) == 7 and set(frame["prediction"]) <= set(range(10))
    assert chosen.scores == {"oof_accuracy": pytest.approx(record["blends"][record["chosen"]]["oof"]),
                             "test_accuracy": pytest.approx(record["blends"][record["chosen"]]["test"])}

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("ensembles").experiment_id], "tags.ensemble = 'digits'")
    assert run.info.run_name == "ensemble/digits" and run.info.run_id == record["tracking_run_id"]
    assert f"{record['chosen']}/test_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"ensemble.md", "build.json", "plots/member_weights.png", "plots/prediction_correlation.png"} <= artifacts

    monkeypatch.setenv("TUNER_ENSEMBLES", str(root))
    page = tmp_path / "report.html"
    result = run_in_process(monkeypatch, capsys, "report", "digits-blend", "-o", str(page), "--storage", storage_url,
                            "--tracking-uri", tracking_uri)
    assert result.returncode == 0, result.stderr
    assert "Ensemble digits" in page.read_text() and "oof_accuracy" in page.read_text()


@pytest.mark.slow
def test_build_without_keras_members_and_a_failed_save_leaves_the_last_build(write_study, storage_url, tracking_uri,
                                                                             tmp_path, monkeypatch):
    """No deep member: the wide-and-deep blend says it used a dense deep part. A save that fails after the
    test look keeps that look counted, deletes its MLflow run and leaves the previous build in place (that
    second build leaves out the wide-and-deep blend: its save fails whatever it holds)."""
    from tuner.ensemble.build import build_ensemble

    spec = holdout_study("trees", families=["linear", "xgboost"], budget={"trials": 4, "epochs": 2, "rounds": 8},
                      sampler={"name": "random", "seed": 4})
    search(write_study(spec), storage_url, tracking_uri)
    root = tmp_path / "ensembles"
    record = build_ensemble("trees", ["trees"], storage_url, tracking_uri, per_family=2, folds=2, root=root)
    assert record["wide_deep"]["deep_part"]["family"] == "dense"
    assert "no reusable Keras member" in record["wide_deep"]["deep_part"]["origin"]
    assert record["blends"][record["chosen"]]["oof"] == pytest.approx(
        max(r["oof"] for r in record["blends"].values()))
    stored = (root / ".built" / "trees" / "build.json").read_text()

    def broken(self, folder, saved=None):
        raise OSError("disk full")

    monkeypatch.setattr(FittedEnsemble, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        build_ensemble("trees", ["trees"], storage_url, tracking_uri, per_family=2, folds=2, root=root, wide_deep=False)
    assert (root / ".built" / "trees" / "build.json").read_text() == stored
    assert [p.name for p in (root / ".built").iterdir()] == ["trees"]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("ensembles").experiment_id],
                              "tags.ensemble = 'trees'")
    assert [r.info.run_id for r in runs] == [record["tracking_run_id"]]
    attrs = optuna.load_study(study_name="trees", storage=storage_url).user_attrs
    assert attrs["tuner.test_looks"] == 2 and attrs["tuner.test_lookers"] == ["ensemble build trees"] * 2


def _record(members: list[str]) -> dict:
    """A build record with what `tuner report` and the plots read from it."""
    n = len(members)
    return {"name": "blend", "studies": ["s"], "metric": "roc_auc", "direction": "maximize", "chosen": "weighted",
            "best_single_member": members[0], "weighting": "greedy selection (Caruana)", "built_at": "2025-01-01 00:00:00",
            "blends": {"weighted": {"oof": 0.9, "test": 0.89, "test_se": 0.01, "members": members}},
            "members": [{"label": m, "oof": 0.9, "test": 0.88, "weight": 1.0 / n} for m in members],
            "dropped": [], "verdict": ["a verdict"],
            "correlation": {"members": members, "matrix": np.eye(n).tolist()}}


def test_the_report_embeds_each_ensembles_weights_and_correlation_plots(tmp_path):
    from tuner.reporting.ensemble_page import ensemble_sections

    folder = tmp_path / ".built" / "blend"
    folder.mkdir(parents=True)
    (folder / "build.json").write_text(json.dumps(_record(["#1 linear", "#2 xgboost"])))
    [section] = ensemble_sections("s", tmp_path)
    assert section.body.count('<img src="data:image/png;base64,') == 2
    assert "member weights of the weighted blend (greedy selection (Caruana))" in section.body


def test_ensemble_plots_go_to_each_source_studys_run_without_stale_ones(tmp_path):
    from tuner.ensemble.judge import _show_on_studies
    from tuner.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracker.open_study_run(tracker.experiment_id("s"), "uid-s", "s", {}, {}, {})
    tracker.log_artifacts(run_id, {"plots/history.png": b"the study's own"})
    source = SimpleNamespace(config=SimpleNamespace(name="s"), study=SimpleNamespace(user_attrs={"tuner.uid": "uid-s"}))
    from tuner.reporting.plots import ensemble_plots

    _show_on_studies(tracker, [source], "blend", ensemble_plots(_record(["#1 linear", "#2 xgboost"])))
    sizes = {a.path: a.file_size for a in tracker.client.list_artifacts(run_id, "plots")}
    assert sizes["plots/ensemble-blend-weights.png"] > 0 and sizes["plots/ensemble-blend-correlation.png"] > 0
    _show_on_studies(tracker, [source], "blend", ensemble_plots(_record(["#1 linear"])))  # one member: no heatmap
    assert {a.path for a in tracker.client.list_artifacts(run_id, "plots")} == {
        "plots/history.png", "plots/ensemble-blend-weights.png"}


def test_a_build_limited_by_the_time_budget_skips_wide_and_deep_and_slow_families(write_study, storage_url,
                                                                                 tracking_uri, tmp_path):
    """What `run-all --budget` asks when time is short: members of the named families only, no
    jointly trained blend; the record, the report and the chosen blend say so."""
    from tuner.ensemble.build import build_ensemble
    from tuner.reporting.ensemble_page import render_markdown

    spec = holdout_study("short", families=["linear", "random_forest"], budget={"trials": 4},
                         sampler={"name": "random", "seed": 5})
    search(write_study(spec), storage_url, tracking_uri)
    record = build_ensemble("short", ["short"], storage_url, tracking_uri, per_family=2, folds=2,
                            root=tmp_path / "ensembles", families=["linear"], wide_deep=False)
    assert {m["family"] for m in record["members"]} == {"linear"}
    assert "wide_deep" not in record["blends"] and record["wide_deep"] is None
    assert record["chosen"] in record["blends"]
    assert "not built: the time budget could not pay for it" in render_markdown(record)
    assert not (tmp_path / "ensembles" / ".built" / "short" / "wide_deep").exists()
