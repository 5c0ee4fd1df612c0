"""The CLI as a user runs it: a real process, a real Optuna storage and a real MLflow store."""

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, run_cli, tiny_study
from tiny_study import run_in_process, search


@pytest.mark.slow
def test_multi_family_study_end_to_end_with_mlflow_runs(tmp_path, storage_url, tracking_uri, monkeypatch, capsys):
    spec = yaml.safe_load((REPO / "studies" / "breast-cancer.yaml").read_text())
    spec.update(name="e2e", budget={"trials": 6, "epochs": 5, "rounds": 50, "patience": 2},
                sampler={"name": "random", "seed": 4}, split={"test_fraction": 0.2, "validation_fraction": 0.2, "seed": 42})
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = run_cli("study", "run", str(path), "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert run.returncode == 0, run.stderr
    assert "best val_roc_auc =" in run.stdout and "trial 6/6" in run.stdout
    assert run.stderr.strip() == "", "start-up noise or warnings leaked to stderr"

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("tuner.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 6 and len(runs) == 7
    assert parent.info.status == "FINISHED"
    assert parent.data.params["metric"] == "roc_auc" and parent.data.params["rows_test"] == "114"
    assert parent.data.tags["device"] == "cpu" and parent.data.tags["device.cpu"]
    assert "version.optuna" in parent.data.tags
    assert "best_val_roc_auc" in parent.data.metrics
    study = optuna.load_study(study_name="e2e", storage=storage_url)
    by_number = {t.number: t for t in study.trials}
    for child in children:
        trial = by_number[int(child.data.tags["trial"])]
        assert child.info.run_name == f"trial-{trial.number:03d} {trial.user_attrs['family']}"
        assert child.data.tags["state"] == trial.state.name
        assert child.data.tags["family"] == child.data.params["family"] == trial.user_attrs["family"]
        assert child.data.tags["device"] == "cpu"
        if trial.state.name == "COMPLETE":
            assert child.data.metrics["val_roc_auc"] == pytest.approx(trial.value)
        if trial.user_attrs["family"] in ("dense", "xgboost") and trial.state.name == "COMPLETE":
            curve = [k for k in child.data.metrics if k.startswith(("epoch/val_", "round/val_"))]
            assert curve and len(client.get_metric_history(child.info.run_id, curve[0])) > 1
    families = {c.data.params["family"] for c in children}
    assert len(families) >= 3

    # reading the study back is about output, not processes: the same entry point in this process
    shown = run_in_process(monkeypatch, capsys, "study", "show", "e2e", "--storage", storage_url)
    assert shown.returncode == 0 and "leaderboard by family" in shown.stdout and "best: trial" in shown.stdout
    listed = run_in_process(monkeypatch, capsys, "study", "list", "--storage", storage_url)
    assert listed.returncode == 0 and "e2e" in listed.stdout


def test_datasets_and_help():
    listed = run_cli("datasets")
    assert listed.returncode == 0 and "builtin:digits" in listed.stdout
    for args in (["--help"], ["study", "--help"], ["study", "run", "--help"], ["ui", "--help"]):
        shown = run_cli(*args)
        assert shown.returncode == 0 and "Usage" in shown.stdout


@pytest.mark.parametrize("change, expected", [
    ({"budget": {"trials": -1}}, "budget.trials: Input should be greater than 0"),
    ({"data": {"source": "rows.csv", "target": "y"}}, "rows.csv not found"),
    ({"families": ["linear", "svm"]}, "unknown family 'svm'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, write_study, change, expected):
    storage, tracking = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'm.db'}"
    path = write_study(tiny_study("bad", **change))
    run = run_cli("study", "run", str(path), "--storage", storage, "--tracking-uri", tracking)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "o.db").exists() or optuna.get_all_study_names(storage) == []
    if (tmp_path / "m.db").exists():
        assert MlflowClient(tracking).search_experiments(filter_string="name = 'bad'") == []


def test_unknown_study_name_and_bad_storage_exit_2(tmp_path, monkeypatch, capsys):
    """Messages and exit statuses, through the CLI's entry point in this process (no new interpreters)."""
    import optuna

    def tuner(*args):
        return run_in_process(monkeypatch, capsys, *args)

    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")  # a store without the study
    shown = tuner("study", "show", "nope", "--storage", f"sqlite:///{tmp_path / 'o.db'}")
    assert shown.returncode == 2 and "no study named 'nope'" in shown.stderr
    missing = tuner("study", "show", "nope", "--storage", f"sqlite:///{tmp_path / 'typo.db'}")
    assert missing.returncode == 2 and "no storage at" in missing.stderr and not (tmp_path / "typo.db").exists()
    listed = tuner("study", "list", "--storage", "postgresql+psycopg://x@127.0.0.1:1/none")
    assert listed.returncode == 2 and "cannot be opened" in listed.stderr


@pytest.mark.slow
def test_jobs_run_worker_processes_on_one_study(tmp_path, write_study, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    # 8 bagged 2-fold trials: enough that the second worker, started a few seconds later, gets some
    path = write_study(tiny_study("jobs", families=["linear", "random_forest", "xgboost"]))
    run = run_cli("study", "run", str(path), "--trials", "8", "--jobs", "2", "--storage", storage,
                  "--tracking-uri", tracking_uri)
    assert run.returncode == 0, run.stderr
    trials = optuna.load_study(study_name="jobs", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    counted = [t for t in trials if not t.user_attrs.get("skipped")]  # a race's extra trial is refused, not run
    assert len(counted) == 8 and {t.state.name for t in counted} <= {"COMPLETE", "PRUNED"}
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("jobs")
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("tuner.role") == "study"]) == 1
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["pid"] for r in runs if r.data.tags.get("tuner.role") == "trial"}) == 2


def test_the_resume_line_after_ctrl_c_hides_passwords(monkeypatch):
    import sys

    from typer.testing import CliRunner

    import tuner.cli.app
    import tuner.pipeline.study_run
    import tuner.search.workers

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner.search.workers, "interrupt_on_signals", lambda: None)  # keep pytest's own handlers
    monkeypatch.setattr(tuner.pipeline.study_run, "run_study", interrupted)
    argv = ["tuner", "study", "run", "s.yaml", "--storage", "postgresql+psycopg://tuner:secret@db:5432/studies",
            "--tracking-uri=https://me:token@mlflow.example.com"]
    monkeypatch.setattr(sys, "argv", argv)
    result = CliRunner().invoke(tuner.cli.app.app, argv[1:])
    assert result.exit_code == 130
    shown = " ".join(result.stderr.split())
    assert ("resume with: tuner study run s.yaml --storage postgresql+psycopg://tuner:***@db:5432/studies "
            "--tracking-uri=https://me:***@mlflow.example.com") in shown
    assert "secret" not in result.output + result.stderr and "token" not in result.output + result.stderr


@pytest.mark.parametrize("argv, line, status", [
    (["bogus"], "error: No such command 'bogus'. (see --help)", 2),
    (["study", "run"], "error: Missing argument 'study_file'. (see --help)", 2),
    (["study", "run", "s.yaml", "--trials", "0"],
     "error: Invalid value for '--trials': Input should be greater than or equal to 1 (see --help)", 2),
    (["study", "holdout", "s", "--top", "1", "--trials", "2"], "error: give --top or --trials, not both", 2),
])
def test_a_refusal_is_one_line_and_its_exit_status(argv, line, status, monkeypatch, capsys):
    """Usage errors (Typer's, from its vendored click) and TunerError alike: one line on stderr, no usage banner."""
    import sys

    from tuner.cli.app import main

    monkeypatch.setattr(sys, "argv", ["tuner", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == status
    assert capsys.readouterr().err.strip() == line
