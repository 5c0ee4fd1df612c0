"""`study run`'s end-of-run refresh, `tuner study plots` and `tuner report` on a tiny real study."""

from __future__ import annotations

import sys

import pytest
from mlflow.tracking import MlflowClient
from tiny_study import make_tiny_study

from tuner.cli.app import main
from tuner.study.catalog import describe_study
from tuner.tracking import Tracker


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_study(tmp_path_factory.mktemp("dash"))


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `tuner ARGS` in-process through the console entry point; return (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["tuner", *args])
    try:
        main()
        status = 0
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def runs(tiny):
    client = MlflowClient(tiny.tracking_uri)
    experiment = client.get_experiment_by_name(tiny.name)
    found = client.search_runs([experiment.experiment_id])
    parent = next(r for r in found if r.data.tags.get("tuner.role") == "study")
    children = [r for r in found if r.data.tags.get("tuner.role") == "trial"]
    return client, experiment, parent, children


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def test_run_logs_plots_and_tags_the_best_child_run(tiny):
    client, experiment, parent, children = runs(tiny)
    assert {"plots/history.png", "plots/scores_by_family.png"} <= artifact_paths(client, parent.info.run_id, "plots")
    assert "study.yaml" in artifact_paths(client, parent.info.run_id)
    assert parent.data.tags["mlflow.note.content"] == "Tiny study for dashboard tests."
    best = [r for r in children if r.data.tags.get("best") == "true"]
    assert [r.data.tags["trial"] for r in best] == [parent.data.tags["best_trial"]]
    for run in children:
        assert float(run.data.tags["score"]) == pytest.approx(run.data.metrics["cv_roc_auc"], abs=1e-6)


def test_a_keras_study_gets_learning_curves_and_family_tags(tmp_path):
    import yaml

    from tuner.pipeline.study_run import run_study

    path = tmp_path / "dense.yaml"
    path.write_text(yaml.safe_dump({"name": "curves-e2e", "data": {"source": "builtin:breast_cancer"},
                                    "split": {"folds": 2, "seed": 0},  # bagged like the default, 2 fits per trial not 5
                                    "families": ["dense"], "budget": {"trials": 2, "epochs": 2, "patience": 2}}))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    run_study(path, f"sqlite:///{tmp_path}/optuna.db", tracking)
    client = MlflowClient(tracking)
    found = client.search_runs([client.get_experiment_by_name("curves-e2e").experiment_id])
    parent = next(r for r in found if r.data.tags.get("tuner.role") == "study")
    children = [r for r in found if r.data.tags.get("tuner.role") == "trial"]
    assert len(children) == 2 and all(r.data.tags["family"] == "dense" for r in children)
    sizes = {a.path: a.file_size for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert sizes.get("plots/learning_curves.png", 0) > 0


def test_mark_best_moves_the_tag(tiny):
    client, experiment, parent, children = runs(tiny)
    tracker = Tracker(tiny.tracking_uri)
    other = next(r for r in children if r.data.tags.get("best") != "true")
    tracker.mark_best(experiment.experiment_id, parent.info.run_id, int(other.data.tags["trial"]))
    _, _, _, children = runs(tiny)
    assert [r.info.run_id for r in children if r.data.tags.get("best") == "true"] == [other.info.run_id]
    tracker.mark_best(experiment.experiment_id, parent.info.run_id, int(parent.data.tags["best_trial"]))


def test_trial_curves_read_back_from_child_runs(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = tracker.experiment_id("curves")
    parent = tracker.open_study_run(experiment_id, "uid", "curves", {}, {}, {})
    run_id = tracker.start_trial(experiment_id, parent, 7, "dense", {"units": 16}, {})
    tracker.finish_trial(run_id, "COMPLETE", {"val_roc_auc": 0.9},
                         {"epoch/val_loss": [0.5, 0.4, 0.45], "epoch/val_auc": [0.8, 0.9, 0.85]}, 1.0)
    curves = tracker.trial_curves(experiment_id, parent, [7, 8])
    assert curves == {7: {"val_auc": [0.8, 0.9, 0.85], "val_loss": [0.5, 0.4, 0.45]}}


def test_resuming_a_study_rewrites_its_description_and_study_file(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = tracker.experiment_id("edited")
    first = tracker.open_study_run(experiment_id, "uid", "edited", {"mlflow.note.content": "old words"}, {},
                                   {"study.yaml": "budget: {trials: 4}"})
    again = tracker.open_study_run(experiment_id, "uid", "edited", {"mlflow.note.content": "new words"}, {},
                                   {"study.yaml": "budget: {trials: 40}"})
    assert again == first
    assert tracker.client.get_run(first).data.tags["mlflow.note.content"] == "new words"
    with open(tracker.client.download_artifacts(first, "study.yaml")) as handle:
        assert handle.read() == "budget: {trials: 40}"
    tracker.open_study_run(experiment_id, "uid", "edited", {}, {}, {})  # a --jobs worker changes nothing
    assert tracker.client.get_run(first).data.tags["mlflow.note.content"] == "new words"


def test_replacing_plots_removes_a_stale_one_and_keeps_other_commands_plots(tmp_path):
    from tuner.reporting.plots import FINALIZE_PLOT, is_study_plot

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracker.open_study_run(tracker.experiment_id("stale"), "uid", "stale", {}, {}, {})
    tracker.log_artifacts(run_id, {FINALIZE_PLOT: b"scatter"})
    tracker.replace_plots(run_id, {"plots/history.png": b"one", "plots/slice_linear.png": b"two"}, owns=is_study_plot)
    tracker.replace_plots(run_id, {"plots/history.png": b"three"}, owns=is_study_plot)  # the slice failed to draw
    assert artifact_paths(tracker.client, run_id, "plots") == {"plots/history.png", FINALIZE_PLOT}
    with open(tracker.client.download_artifacts(run_id, "plots/history.png"), "rb") as handle:
        assert handle.read() == b"three"


def test_study_plots_command_logs_plots(tiny, monkeypatch, capsys):
    status, out, err = cli(monkeypatch, capsys, "study", "plots", tiny.name, *tiny.store_args)
    assert status == 0, err
    assert "under plots/" in out and "skipped: learning curves" in out
    client, _, parent, _ = runs(tiny)
    logged = artifact_paths(client, parent.info.run_id, "plots")
    assert {"plots/history.png", "plots/scores_by_family.png"} <= logged
    assert any(path.startswith("plots/slice_") for path in logged)
    png = client.download_artifacts(parent.info.run_id, "plots/history.png")
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_command_writes_one_self_contained_page(tiny, tmp_path, monkeypatch, capsys):
    output = tmp_path / "report.html"
    status, out, err = cli(monkeypatch, capsys, "report", tiny.name, "-o", str(output), *tiny.store_args)
    assert status == 0, err
    page = output.read_text()
    assert "Leaderboard by family" in page and "best cv_roc_auc" in page
    leaderboard = describe_study(tiny.name, tiny.storage).families
    assert leaderboard and all(f"<td>{row.family}</td>" in page for row in leaderboard)
    assert '<img src="data:image/png;base64,' in page
    assert "sealed" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # no external assets
    client, _, parent, _ = runs(tiny)
    assert "report.html" in artifact_paths(client, parent.info.run_id)


def test_unknown_study_is_one_line_and_exit_2(tiny, monkeypatch, capsys):
    for command in (["study", "plots", "nope"], ["report", "nope"]):
        status, out, err = cli(monkeypatch, capsys, *command, *tiny.store_args)
        assert status == 2
        assert err.strip().startswith("error: no study named 'nope'") and len(err.strip().splitlines()) == 1


def test_missing_mlflow_run_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    status, _, err = cli(monkeypatch, capsys, "study", "plots", tiny.name, "--storage", tiny.storage,
                         "--tracking-uri", f"sqlite:///{tmp_path}/other.db")
    assert status == 2
    assert "has no MLflow run" in err and "--tracking-uri" in err


def test_ui_command_starts_mlflow_and_names_optuna_dashboard(monkeypatch, capsys, tmp_path):
    import tuner.cli.ui

    started = {}

    def fake_call(command, env):
        started.update(command=command, env=env)
        return 0

    monkeypatch.setattr(tuner.cli.ui, "run_until_stopped", fake_call)
    monkeypatch.setattr(tuner.cli.ui, "_has_optuna_dashboard", lambda: True)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    status, out, _ = cli(monkeypatch, capsys, "ui", "--port", "5123", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                         "--storage", storage)
    assert status == 0
    assert started["command"][1:4] == ["-m", "mlflow", "ui"]
    assert ["--host", "127.0.0.1"] == started["command"][4:6] and "5123" in started["command"]
    assert started["env"]["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path}/mlflow.db"
    assert f"optuna-dashboard {storage}" in out
    assert "workflowType=machine_learning" in out


def test_a_plotting_failure_never_loses_the_study(tmp_path, monkeypatch, caplog):
    import tuner.reporting.dashboard

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(tuner.reporting.dashboard, "study_plots", broken)
    with caplog.at_level("WARNING", logger="tuner"):
        study = make_tiny_study(tmp_path, name="fragile", trials=2)
    assert "plots were not refreshed (matplotlib fell over)" in caplog.text
    assert sum(row.complete for row in describe_study(study.name, study.storage).families) == 2
    client = MlflowClient(study.tracking_uri)
    parent = client.search_runs([client.get_experiment_by_name(study.name).experiment_id],
                                filter_string="tags.`tuner.role` = 'study'")[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 2
