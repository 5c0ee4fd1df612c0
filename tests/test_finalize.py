import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

import tuner.finalize as finalize_module
from tuner.data import TEST, TRAIN, VALID
from tuner.errors import SplitMismatchError
from tuner.finalize import AlreadyFinalized, bootstrap_interval, finalize_study, select_finalists
from tuner.metrics import METRICS
from tuner.study import open_sealed, run_study

from conftest import run_cli, tiny_study


@pytest.fixture
def small_study(write_study, storage_url, tracking_uri):
    spec = tiny_study("fin", families=["linear", "random_forest", "xgboost"], sampler={"name": "random", "seed": 2})
    run_study(write_study(spec), storage_url, tracking_uri, trials=6)
    return "fin"


def test_finalize_refits_on_train_and_val_and_scores_test_once(small_study, storage_url, tracking_uri, monkeypatch):
    fitted_on = []
    real_prepare = finalize_module.prepare_parts

    def recording(dataset, task, fit_rows, other):
        fitted_on.append((fit_rows, other))
        return real_prepare(dataset, task, fit_rows, other)

    monkeypatch.setattr(finalize_module, "prepare_parts", recording)
    report = finalize_study(small_study, storage_url, tracking_uri, top=2)
    split = open_sealed(small_study, storage_url).split
    [(fit_rows, other)] = fitted_on
    np.testing.assert_array_equal(np.sort(fit_rows), np.sort(np.concatenate([split.rows(TRAIN), split.rows(VALID)])))
    np.testing.assert_array_equal(other["test"], split.rows(TEST))

    families = {r.family for r in report.rows}
    assert families == {"linear", "random_forest", "xgboost"}  # top 2 widened to every family's best
    assert report.test_looks == 1 and report.rows_test == 114
    for row in report.rows:
        assert row.test_low <= row.test <= row.test_high
        assert row.optimism == pytest.approx(row.val - row.test)  # roc_auc is maximised
    assert sorted(r.val_rank for r in report.rows) == list(range(1, len(report.rows) + 1))
    study = optuna.load_study(study_name=small_study, storage=storage_url)
    assert study.user_attrs["tuner.finalize"]["rows"][0]["trial"] == report.winner.trial

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(small_study)
    [run] = client.search_runs([experiment.experiment_id], "tags.`tuner.role` = 'finalize'")
    parent = client.search_runs([experiment.experiment_id], "tags.`tuner.role` = 'study'")[0]
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.metrics["winner_test_roc_auc"] == pytest.approx(report.winner.test)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"finalize.md", "finalize.json", "plots/validation_vs_test.png"} <= artifacts


def test_second_look_is_refused_then_counted(small_study, storage_url, tracking_uri):
    finalize_study(small_study, storage_url, tracking_uri, top=1)
    with pytest.raises(AlreadyFinalized, match="already scored on its test split .1 look"):
        finalize_study(small_study, storage_url, tracking_uri, top=1)
    again = finalize_study(small_study, storage_url, tracking_uri, top=1, force=True)
    assert again.test_looks == 2
    assert any("test look number 2" in w for w in again.warnings)


def test_finalize_refuses_an_altered_or_missing_split_record(small_study, storage_url, tracking_uri):
    study = optuna.load_study(study_name=small_study, storage=storage_url)
    record = dict(study.user_attrs["tuner.split"], seed=99)
    study.set_user_attr("tuner.split", record)
    with pytest.raises(SplitMismatchError, match="altered"):
        finalize_study(small_study, storage_url, tracking_uri)
    assert "tuner.test_looks" not in study.user_attrs  # refused before any look
    optuna.create_study(study_name="foreign", storage=storage_url)
    with pytest.raises(SplitMismatchError, match="no sealed split record"):
        finalize_study("foreign", storage_url, tracking_uri)


def test_select_finalists_orders_by_validation():
    study = optuna.create_study(direction="minimize")
    for value, family in [(3.0, "a"), (1.0, "a"), (2.0, "b"), (5.0, "c")]:
        trial = study.ask()
        trial.set_user_attr("family", family)
        study.tell(trial, value)
    chosen = select_finalists(study, top=2)
    assert [t.value for t in chosen] == [1.0, 2.0, 5.0]


def test_bootstrap_interval_is_tight_for_perfect_and_wide_for_random_predictions():
    y = np.array([0, 1] * 100)
    perfect = np.column_stack([1 - y, y]).astype(float)
    low, high, se = bootstrap_interval(METRICS["accuracy"], y, perfect)
    assert low == high == 1.0 and se == 0.0
    rng = np.random.default_rng(0)
    p = rng.random(200)
    low, high, se = bootstrap_interval(METRICS["roc_auc"], y, np.column_stack([1 - p, p]))
    assert low < 0.5 < high and 0.02 < se < 0.06


def test_finalize_through_the_cli_names_every_split(small_study, storage_url, tracking_uri):
    run = run_cli("study", "finalize", small_study, "--top", "1", "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert run.returncode == 0, run.stderr
    assert "val_roc_auc" in run.stdout and "test_roc_auc" in run.stdout and "validation flattered it by" in run.stdout
    again = run_cli("study", "finalize", small_study, "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert again.returncode == 2 and "--force" in again.stderr


def test_report_has_a_finalize_section_once_finalized(small_study, storage_url, tracking_uri, tmp_path):
    import html

    from tuner.dashboard import write_report

    before, _ = write_report(small_study, tmp_path / "before.html", storage_url, tracking_uri)
    assert "Finalize:" not in before.read_text()
    report = finalize_study(small_study, storage_url, tracking_uri, top=2)
    after, _ = write_report(small_study, tmp_path / "after.html", storage_url, tracking_uri)
    page = after.read_text()
    section = page[page.index("<h2>Finalize: val_roc_auc against the sealed test split (test_roc_auc)</h2>"):]
    assert "<th>test_roc_auc 95% interval</th>" in section and "<th>optimism (val_roc_auc - test_roc_auc)</th>" in section
    for row in report.rows:
        assert f"<td>{row.test:.4f}</td>" in section and f"<td>{row.optimism:+.4f}</td>" in section
    assert "Spearman rank correlation of val_roc_auc and test_roc_auc" in section
    assert all(html.escape(w) in section for w in report.warnings)
    assert section.count('<img src="data:image/png;base64,') == 1  # the val-vs-test scatter


def test_finalize_section_renders_an_old_record_without_a_score_name():
    from tuner.report import finalize_section

    record = {"metric": "rmse", "rows_train": 80, "rows_val": 20, "rows_test": 25, "test_looks": 2,
              "trials_complete": 9, "spearman": None, "val_standard_error": 0.1, "expected_selection_optimism": 0.2,
              "warnings": ["this is test look number 2: <not untouched>"],
              "rows": [{"val_rank": 1, "family": "linear", "trial": 4, "val": 1.5, "test": 1.7, "test_low": 1.4,
                        "test_high": 2.0, "optimism": 0.2, "test_rank": 1}]}
    section = finalize_section(record)
    assert section.title == "Finalize: val_rmse against the sealed test split (test_rmse)"
    assert "<td>1.7000</td>" in section.body and "n/a (fewer than 3 finalists)" in section.body
    assert "&lt;not untouched&gt;" in section.body
