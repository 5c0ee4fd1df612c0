"""Reusable holdout: Thresholdout on synthetic numbers with known answers, and `tuner study holdout`."""

from dataclasses import asdict

import numpy as np
import optuna
import pytest

import tuner.evaluate.finalize as finalize_module
from tuner.core.config import ThresholdoutConfig
from tuner.data import HOLDOUT, TEST, TRAIN
from tuner.evaluate.holdout import HoldoutBudgetSpent, NoHoldoutPart, Thresholdout, ThresholdoutState, query_holdout
from tuner.study.sealed import open_sealed

from conftest import run_cli, tiny_study
from tiny_study import run_in_process, search


def fresh(threshold=0.04, sigma=0.01, budget=30, entropy=7) -> Thresholdout:
    return Thresholdout.start(ThresholdoutConfig(threshold=threshold, sigma=sigma, budget=budget), entropy)


class TestThresholdout:
    def test_agreeing_holdout_returns_the_train_estimate_and_spends_nothing(self):
        mechanism = fresh(sigma=1e-4)
        for holdout in (0.90, 0.91, 0.89, 0.93):  # within 0.04 of 0.90
            answer = mechanism.query(0.90, holdout)
            assert answer.value == 0.90 and not answer.from_holdout
        assert mechanism.state.budget_left == 30 and mechanism.state.queries == 4 and mechanism.state.revealed == 0

    def test_disagreeing_holdout_is_revealed_noised_and_costs_one(self):
        mechanism = fresh(sigma=1e-3)
        answer = mechanism.query(0.99, 0.80)
        assert answer.from_holdout and answer.value != 0.80 and abs(answer.value - 0.80) < 0.02
        assert mechanism.state.budget_left == 29 and mechanism.state.revealed == 1

    def test_budget_decrements_only_on_exceedances_and_is_then_refused(self):
        mechanism = fresh(sigma=1e-4, budget=2)
        pairs = [(0.9, 0.9), (0.9, 0.5), (0.9, 0.91), (0.9, 0.2)]
        revealed = [mechanism.query(*pair).from_holdout for pair in pairs]
        assert revealed == [False, True, False, True] and mechanism.state.budget_left == 0
        for pair in [(0.9, 0.9), (0.9, 0.1)]:  # spent: even an agreeing query is refused
            with pytest.raises(HoldoutBudgetSpent, match="budget is spent .2 revealed answers of 2, 4 queries"):
                mechanism.query(*pair)

    def test_noise_has_the_configured_scale_and_no_bias(self):
        mechanism = fresh(threshold=0.01, sigma=0.01, budget=10_000)
        answers = [mechanism.query(0.0, 1.0).value for _ in range(4000)]  # always far apart: always revealed
        assert np.mean(answers) == pytest.approx(1.0, abs=0.002)
        assert np.mean(np.abs(np.array(answers) - 1.0)) == pytest.approx(0.01, rel=0.1)  # Laplace(b): E|x| = b

    def test_threshold_is_noisy_near_its_edge(self):
        mechanism = fresh(threshold=0.04, sigma=0.01, budget=10_000)
        revealed = [mechanism.query(0.5, 0.54).from_holdout for _ in range(2000)]  # exactly at the threshold
        assert 0.3 < np.mean(revealed) < 0.7

    def test_state_round_trip_continues_the_same_sequence(self):
        first, second = fresh(), fresh()
        queries = [(0.9, 0.7), (0.9, 0.88), (0.8, 0.95)]
        for pair in queries[:2]:
            first.query(*pair)
            second.query(*pair)
        resumed = Thresholdout(first.config, ThresholdoutState(**asdict(first.state)))
        assert resumed.query(*queries[2]) == second.query(*queries[2])
        other = fresh(entropy=8)
        assert other.query(0.9, 0.7).value != fresh().query(0.9, 0.7).value


@pytest.fixture
def holdout_study(write_study, storage_url, tracking_uri):
    def make(name, **thresholdout):
        split = {"seed": 1, "validation_fraction": 0.2, "holdout_fraction": 0.15, **({"thresholdout": thresholdout} if thresholdout else {})}
        spec = tiny_study(name, split=split, sampler={"name": "random", "seed": 3})
        search(write_study(spec), storage_url, tracking_uri, trials=3)
        return name

    return make


def test_holdout_answers_the_top_trials_and_keeps_state(holdout_study, storage_url, monkeypatch):
    name = holdout_study("reuse")
    refits = []
    real = finalize_module.refit_predictions

    def recording(sealed, trials, fit_rows, scored_rows, part):
        refits.append((fit_rows, scored_rows))
        assert part == "holdout"
        return real(sealed, trials, fit_rows, scored_rows, part)

    monkeypatch.setattr(finalize_module, "refit_predictions", recording)
    report = query_holdout(name, storage_url, top=2)
    split = open_sealed(name, storage_url).split
    [(fit_rows, scored_rows)] = refits
    np.testing.assert_array_equal(fit_rows, split.rows(TRAIN))  # the model the val score came from
    np.testing.assert_array_equal(scored_rows, split.rows(HOLDOUT))
    assert not set(scored_rows) & set(split.rows(TEST))
    assert [r.trial for r in report.rows] == [t.number for t in sorted(
        optuna.load_study(study_name=name, storage=storage_url).trials, key=lambda t: -t.value)[:2]]
    assert report.score_name == "val_roc_auc" and report.queries == 2
    for row in report.rows:
        assert row.answer is not None and (row.from_holdout or row.answer == row.search_score)
    study = optuna.load_study(study_name=name, storage=storage_url)
    state = study.user_attrs["tuner.thresholdout"]
    assert state["queries"] == 2 and state["budget_left"] == 30 - sum(r.from_holdout for r in report.rows)
    assert "tuner.test_looks" not in study.user_attrs  # the test split is not looked at
    again = query_holdout(name, storage_url, numbers=[report.rows[0].trial])
    assert again.queries == 3


def test_spent_budget_says_so_in_one_line_and_exits_non_zero(holdout_study, storage_url, monkeypatch, capsys):
    name = holdout_study("spend", threshold=1e-6, sigma=1e-7, budget=1)  # any difference is revealed
    run = run_cli("study", "holdout", name, "--top", "2", "--storage", storage_url)
    assert run.returncode == 2
    assert "holdout_roc_auc (thresholdout)" in run.stdout and "val_roc_auc" in run.stdout
    assert "holdout budget left: 0 of 1" in run.stdout
    assert run.stderr.strip().startswith("error: the reusable holdout's budget ran out: 1 trial(s)")
    assert len(run.stderr.strip().splitlines()) == 1
    again = run_in_process(monkeypatch, capsys, "study", "holdout", name, "--trials", "0", "--storage", storage_url)
    assert again.returncode == 2 and "budget is spent" in again.stderr and not again.stdout.strip()
    show = run_in_process(monkeypatch, capsys, "study", "show", name, "--storage", storage_url)
    assert "reusable holdout (tuner study holdout): budget left 0 of 1 after 1 queries" in show.stdout


def test_holdout_needs_a_holdout_part_and_complete_trials(write_study, storage_url, tracking_uri, monkeypatch, capsys):
    search(write_study(tiny_study("plain")), storage_url, tracking_uri, trials=1)
    with pytest.raises(NoHoldoutPart, match="has no holdout part"):
        query_holdout("plain", storage_url)
    run = run_in_process(monkeypatch, capsys, "study", "holdout", "plain", "--trials", "x", "--storage", storage_url)
    assert run.returncode == 2 and "not a comma-separated list" in run.stderr
