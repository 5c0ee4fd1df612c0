import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

import tuner.evaluate.finalize as finalize_module
from tuner.data import TEST, TRAIN, VALID
from tuner.core.errors import SplitMismatchError, TunerError
from tuner.evaluate.finalize import (
    AlreadyFinalized, FinalRow, _report_finalists, bootstrap_interval, finalize_study, select_finalists,
)
from tuner.core.metrics import METRICS
from tuner.reporting.finalize_page import render_markdown
from tuner.study.sealed import open_sealed
from tuner.study.catalog import count_test_look
from tuner.pipeline.study_run import run_study
from tuner.tracking import Tracker

from conftest import holdout_study, run_cli
from tiny_study import run_in_process


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """The module's one search of study 'fin' (6 trials, its plots drawn), in Optuna and MLflow stores of
    its own; every test that takes `small_study` gets a copy of those stores (`stores`)."""
    folder = tmp_path_factory.mktemp("fin-searched")
    spec = holdout_study("fin", families=["linear", "random_forest", "xgboost"], sampler={"name": "random", "seed": 2})
    (folder / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run_study(folder / "study.yaml", f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}", trials=6)
    return folder


@pytest.fixture
def stores(searched, tmp_path) -> Path:
    """This test's copy of the searched, never finalized study's stores: what one test finalizes (its
    looks, its MLflow runs) no other test sees. The runs' artifact folder stays the module's."""
    return Path(shutil.copytree(searched, tmp_path / "stores", ignore=shutil.ignore_patterns("artifacts")))


@pytest.fixture
def storage_url(stores) -> str:
    return f"sqlite:///{stores / 'optuna.db'}"


@pytest.fixture
def tracking_uri(stores) -> str:
    return f"sqlite:///{stores / 'mlflow.db'}"


@pytest.fixture
def small_study(stores) -> str:
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
    on_parent = {a.path: a.file_size for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert on_parent["plots/validation_vs_test.png"] > 0 and "plots/history.png" in on_parent


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


def test_finalize_through_the_cli_names_every_split(small_study, storage_url, tracking_uri, monkeypatch, capsys):
    run = run_cli("study", "finalize", small_study, "--top", "1", "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert run.returncode == 0, run.stderr
    assert "val_roc_auc" in run.stdout and "test_roc_auc" in run.stdout and "validation flattered it by" in run.stdout
    again = run_in_process(monkeypatch, capsys, "study", "finalize", small_study, "--storage", storage_url,
                           "--tracking-uri", tracking_uri)
    assert again.returncode == 2 and "--force" in again.stderr


def test_report_has_a_finalize_section_once_finalized(small_study, storage_url, tracking_uri, tmp_path):
    import html

    from tuner.reporting.dashboard import write_report

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
    again = finalize_study(small_study, storage_url, tracking_uri, top=2, force=True)  # a second look always warns
    page = write_report(small_study, tmp_path / "again.html", storage_url, tracking_uri)[0].read_text()
    assert any("test look number 2" in w for w in again.warnings)
    assert all(html.escape(w) in page for w in again.warnings)
    assert section.count('<img src="data:image/png;base64,') == 1  # the val-vs-test scatter


def test_finalize_section_renders_an_old_record_without_a_score_name():
    from tuner.reporting.study_page import finalize_section

    record = {"metric": "rmse", "rows_train": 80, "rows_val": 20, "rows_test": 25, "test_looks": 2,
              "trials_complete": 9, "spearman": None, "val_standard_error": 0.1, "expected_selection_optimism": 0.2,
              "warnings": ["this is test look number 2: <not untouched>"],
              "rows": [{"val_rank": 1, "family": "linear", "trial": 4, "val": 1.5, "test": 1.7, "test_low": 1.4,
                        "test_high": 2.0, "optimism": 0.2, "test_rank": 1}]}
    section = finalize_section(record)
    assert section.title == "Finalize: val_rmse against the sealed test split (test_rmse)"
    assert "<td>1.7000</td>" in section.body and "n/a (fewer than 3 finalists)" in section.body
    assert "&lt;not untouched&gt;" in section.body


def test_study_show_reports_the_live_count_and_who_looked(small_study, storage_url, tracking_uri, monkeypatch, capsys):
    finalize_study(small_study, storage_url, tracking_uri, top=1)
    study = optuna.load_study(study_name=small_study, storage=storage_url)
    count_test_look(study, "ensemble build blend")  # what `ensemble build` counts, without minutes of fitting
    shown = run_in_process(monkeypatch, capsys, "study", "show", small_study, "--storage", storage_url)
    assert shown.returncode == 0, shown.stderr
    assert "test looks: 2 (finalize, ensemble build blend)" in shown.stdout
    assert "finalized at test look 1:" in shown.stdout


def test_a_failing_refit_costs_no_test_look(small_study, storage_url, tracking_uri, monkeypatch):
    real = finalize_module.refit_predictions

    def second_refit_fails(*args):
        for number, refitted in enumerate(real(*args)):
            if number == 1:
                raise MemoryError("out of memory")
            yield refitted

    monkeypatch.setattr(finalize_module, "refit_predictions", second_refit_fails)
    with pytest.raises(MemoryError):
        finalize_study(small_study, storage_url, tracking_uri, top=2)
    assert "tuner.test_looks" not in optuna.load_study(study_name=small_study, storage=storage_url).user_attrs
    monkeypatch.setattr(finalize_module, "refit_predictions", real)
    assert finalize_study(small_study, storage_url, tracking_uri, top=2).test_looks == 1  # no --force needed


def test_a_failure_after_the_look_says_it_was_counted_and_how_to_rerun(small_study, storage_url, tracking_uri,
                                                                       monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(Tracker, "log_finalize", unreachable)
    with pytest.raises(TunerError, match=r"after test look 1 .* was counted \(tracking server went away\).*--force"):
        finalize_study(small_study, storage_url, tracking_uri, top=1)
    assert optuna.load_study(study_name=small_study, storage=storage_url).user_attrs["tuner.test_looks"] == 1


def test_bootstrap_interval_is_nan_when_no_resample_can_be_scored():
    y = np.array([1, 1, 1])  # one class: no resample has a defined roc_auc
    p = np.array([0.8, 0.7, 0.4])
    with pytest.warns(Warning):  # scikit-learn's "only one class" (the point score is undefined too)
        METRICS["roc_auc"].score(y, np.column_stack([1 - p, p]))
    assert all(math.isnan(v) for v in bootstrap_interval(METRICS["roc_auc"], y, np.column_stack([1 - p, p])))


def constructed(metric: str, values: list[float], rows: list[tuple[float, float, float, float]],
                n_val: int = 100, n_test: int = 100):
    """A sealed study's stand-in for `_report_finalists`: complete trials with `values`, finalists (val, test, low, high)."""
    study = optuna.create_study(direction=METRICS[metric].direction)
    for value in values:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"family": "linear"}))
    split = SimpleNamespace(counts=lambda: {"train": 300, "val": n_val, "test": n_test}, folds=None,
                            search_rows=lambda: np.arange(300 + n_val))
    sealed = SimpleNamespace(metric=metric, split=split, study=study, score_name=f"val_{metric}",
                             config=SimpleNamespace(name="constructed"))
    sign = 1 if METRICS[metric].direction == "maximize" else -1
    finals = [FinalRow(i, "linear", {}, None, val, test, low, high, sign * (val - test))
              for i, (val, test, low, high) in enumerate(rows)]
    return sealed, finals


def test_judge_ranks_finalists_and_computes_spearman():
    sealed, rows = constructed("roc_auc", [0.9, 0.8, 0.7, 0.6], [
        (0.9, 0.85, 0.80, 0.90), (0.8, 0.70, 0.65, 0.75), (0.7, 0.75, 0.70, 0.80), (0.6, 0.60, 0.55, 0.65)])
    report = _report_finalists(sealed, rows, looks=1)
    assert [r.val_rank for r in report.rows] == [1, 2, 3, 4]
    assert [r.test_rank for r in report.rows] == [1, 3, 2, 4]
    assert report.spearman == pytest.approx(1 - 6 * 2 / (4 * 15))  # two ranks swapped: 0.8
    assert "Spearman rank correlation of val_roc_auc and test_roc_auc over the finalists: 0.80" in render_markdown(report)


def test_judge_warns_when_the_winners_gap_exceeds_the_test_interval():
    spread_out = [0.99, 0.90, 0.80, 0.70, 0.60]
    sealed, rows = constructed("roc_auc", spread_out, [(0.99, 0.90, 0.88, 0.92), (0.90, 0.89, 0.87, 0.91)])
    [warning] = _report_finalists(sealed, rows, looks=1).warnings
    assert "val_roc_auc flattered the winner by 0.0900 roc_auc, more than the test score's 95% interval (+/-0.0200" in warning
    sealed, rows = constructed("roc_auc", spread_out, [(0.99, 0.98, 0.96, 1.00), (0.90, 0.89, 0.87, 0.91)])
    assert _report_finalists(sealed, rows, looks=1).warnings == []


def test_selection_noise_warning_depends_on_the_trial_count_and_the_validation_size():
    finalists = [(0.95, 0.94, 0.92, 0.96), (0.92, 0.93, 0.91, 0.95)]  # test SE (0.96 - 0.92) / 3.92
    top_scores = [0.95, 0.945, 0.94, 0.935, 0.93]  # the top five differ by 0.02

    def noise_warnings(trials: int, n_val: int) -> list[str]:
        values = top_scores + [0.5] * (trials - len(top_scores))
        sealed, rows = constructed("roc_auc", values, finalists, n_val=n_val, n_test=100)
        report = _report_finalists(sealed, rows, looks=1)
        val_se = 0.04 / 3.92 * math.sqrt(100 / n_val)
        assert report.val_standard_error == pytest.approx(val_se)
        assert report.expected_selection_optimism == pytest.approx(val_se * math.sqrt(2 * math.log(trials)))
        return [w for w in report.warnings if "by luck alone" in w]

    # 100 validation rows: SE 0.0102; best of 5 inflates by 0.0183 (< 0.02), best of 50 by 0.0285 (>= 0.02)
    assert noise_warnings(5, 100) == []
    [warning] = noise_warnings(50, 100)
    assert "picking the best of 50 trials on 100 scored rows flatters the winner by about 0.0285" in warning
    assert "the top 5 val_roc_auc scores differ (0.0200)" in warning and "split.folds" in warning
    assert noise_warnings(50, 400) == []  # four times the validation rows halve the SE: 0.0143 < 0.02


def test_accuracy_uses_the_binomial_standard_error_of_the_validation_size():
    sealed, rows = constructed("accuracy", [0.9, 0.8], [(0.9, 0.8, 0.7, 0.9), (0.8, 0.75, 0.65, 0.85)], n_val=64)
    assert _report_finalists(sealed, rows, looks=1).val_standard_error == pytest.approx(math.sqrt(0.8 * 0.2 / 64))


def test_an_interval_that_could_not_be_bootstrapped_is_a_note_not_a_crash():
    nan = math.nan
    sealed, rows = constructed("roc_auc", [0.9, 0.5], [(0.9, 0.7, nan, nan), (0.5, 0.6, nan, nan)], n_test=3)
    report = _report_finalists(sealed, rows, looks=1)
    assert len(report.warnings) == 1 and "too few or too one-sided to bootstrap" in report.warnings[0]
    assert "| n/a |" in render_markdown(report)
