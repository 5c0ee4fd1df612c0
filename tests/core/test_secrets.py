"""No URL password leaves the process: redacted in messages, logs, MLflow params and tags, and in
every file a study run writes."""

from __future__ import annotations

import logging

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli, tiny_study
from tiny_study import run_in_process
from tests.search.test_scale_out import pg_url  # noqa: F401  (a fresh PostgreSQL database)
from tuner.core.secrets import redact_url

PLANTED = "Pl4ntedSecret"


@pytest.mark.parametrize("text, redacted", [
    ("postgresql+psycopg://u:PW@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("sqlite:///studies/optuna.db", "sqlite:///studies/optuna.db"),
    ("cannot reach mysql://bob:p@ss@host/db (refused)", "cannot reach mysql://bob:***@host/db (refused)"),
    ("https://h/x.csv?user=a&password=zz&y=1", "https://h/x.csv?user=a&password=***&y=1"),
])
def test_a_url_password_is_hidden_wherever_the_url_sits(text, redacted):
    assert redact_url(text) == redacted


def test_a_log_line_on_the_tuner_logger_is_redacted(caplog):
    with caplog.at_level(logging.WARNING, logger="tuner"):
        logging.getLogger("tuner").warning("store %s is slow", f"postgresql://u:{PLANTED}@h/db")
    assert PLANTED not in caplog.text and "u:***@h" in caplog.text


@pytest.fixture
def second_pg_url():
    from tests.search.test_scale_out import fresh_database

    yield from fresh_database()


@pytest.mark.parametrize("tracking_on", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_a_planted_password_is_in_no_file_log_param_tag_or_attribute_of_a_study_run(tmp_path, pg_url, second_pg_url,  # noqa: F811
                                                                                    tracking_on, monkeypatch, capsys):
    """Storage (and tracking) on PostgreSQL with a password (trust auth accepts any); the run's output,
    every file under the project (studies, trial bags, mlruns with its store and artifacts), the
    MLflow params and tags and the Optuna attributes are searched for it."""
    storage = pg_url.replace("postgres@", f"postgres:{PLANTED}@")
    (tmp_path / "study.yaml").write_text(__import__("yaml").safe_dump(
        tiny_study("secret", families=["linear"], budget={"trials": 2})))
    tracking = (f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" if tracking_on == "sqlite"
                else second_pg_url.replace("postgres@", f"postgres:{PLANTED}@"))
    done = run_cli("study", "run", "study.yaml", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path,
                   env={"TUNER_ARTIFACTS": str(tmp_path / "studies" / "trial-bags")})
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.chdir(tmp_path)  # the refusal's message is the point, not its process: the entry point in this one
    refused = run_in_process(monkeypatch, capsys, "study", "show", "nothing-here", "--storage", storage)
    assert refused.returncode == 2 and "postgres:***@" in refused.stderr
    for text in (done.stdout, done.stderr, refused.stdout, refused.stderr):
        assert PLANTED not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("trial-bags" in str(p) for p in files)
    assert not [str(p) for p in files if PLANTED.encode() in p.read_bytes()]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("secret")
    assert PLANTED not in experiment.artifact_location
    for run in client.search_runs([experiment.experiment_id]):
        assert PLANTED not in repr(run.data.params) + repr(run.data.tags)
    study = optuna.load_study(study_name="secret", storage=pg_url)
    assert PLANTED not in repr(study.user_attrs) + repr([(t.user_attrs, t.system_attrs) for t in study.trials])
