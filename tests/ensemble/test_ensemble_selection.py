"""Blend weights from out-of-fold prediction matrices, and the out-of-fold procedure itself."""

import numpy as np
import pytest

from tuner.data import load_dataset
from tuner.ensemble import WeightedAverage
from tuner.ensemble.oof import FoldFit, fold_ids, out_of_fold
from tuner.ensemble.selection import (
    blend, cross_fitted, drop_near_duplicates, greedy_selection, optimised_weights,
)
from tuner.core.metrics import METRICS


def test_greedy_selection_finds_the_pair_whose_errors_cancel():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    error = rng.normal(scale=0.5, size=300)
    members = [y + error, y - error, y + rng.normal(scale=0.8, size=300)]
    weights = greedy_selection(members, y, METRICS["rmse"], rounds=50)
    np.testing.assert_allclose(weights, [0.5, 0.5, 0.0])
    assert METRICS["rmse"].score(y, blend(members, weights)) < 1e-9


def test_greedy_selection_keeps_only_a_perfect_member_under_log_loss():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    perfect = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    noisy = [rng.dirichlet(np.ones(3), 200) for _ in range(2)]
    weights = greedy_selection([noisy[0], perfect, noisy[1]], y, METRICS["log_loss"], rounds=10)
    np.testing.assert_allclose(weights, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("classification", [False, True])
def test_optimised_weights_are_non_negative_sum_to_one_and_recover_a_mixture(classification):
    rng = np.random.default_rng(2)
    if classification:
        y = rng.integers(0, 2, 500)
        a = np.column_stack([1 - (0.2 + 0.6 * y), 0.2 + 0.6 * y])  # informative
        members = [rng.dirichlet(np.ones(2), 500), a, rng.dirichlet(np.ones(2), 500)]
        weights = optimised_weights(members, y, classification=True)
        assert weights[1] > 0.8
    else:
        a, b, c = rng.normal(size=(3, 400))
        y = 0.3 * a + 0.7 * b
        weights = optimised_weights([a, b, c], y, classification=False)
        np.testing.assert_allclose(weights, [0.3, 0.7, 0.0], atol=1e-3)
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    WeightedAverage(weights)  # the contract's own check accepts them


def test_cross_fitted_weights_never_see_the_fold_they_blend():
    y = np.arange(12, dtype=float)
    ids = np.repeat([0, 1, 2], 4)
    seen = []

    def rule(predictions, target):
        seen.append(set(target.tolist()))
        return np.array([1.0])

    out = cross_fitted(rule, [y.copy()], y, ids)
    np.testing.assert_array_equal(out, y)
    for fold, rows_seen in zip(range(3), seen):
        assert rows_seen.isdisjoint(y[ids == fold].tolist()) and len(rows_seen) == 8


def test_near_duplicates_are_dropped_keeping_the_better_one():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    good = y + rng.normal(scale=0.3, size=200)
    twin = good + rng.normal(scale=0.01, size=200)  # the same model trained twice
    other = y + rng.normal(scale=0.5, size=200)
    metric = METRICS["rmse"]
    scores = [metric.score(y, p) for p in (twin, good, other)]
    kept, dropped = drop_near_duplicates(["twin", "good", "other"], [twin, good, other], scores, metric, 0.98)
    better, worse = ("good", "twin") if scores[1] < scores[0] else ("twin", "good")
    assert [d.dropped for d in dropped] == [worse] and dropped[0].kept == better and dropped[0].correlation > 0.98
    assert len(kept) == 2 and kept[0] in (0, 1) and 2 in kept


class _Recorder:
    """A fitter that records which rows it was fitted on and which it predicts."""

    def __init__(self):
        self.fits, self.predicted = [], []

    def __call__(self, part, encoder):
        self.fits.append(part.rows.copy())
        recorder = self

        class Fitted(FoldFit):
            def predict(self, other):
                recorder.predicted.append(other.rows.copy())
                return np.zeros(len(other))

        return Fitted([])


def test_out_of_fold_predictions_never_contain_a_rows_own_fit():
    dataset = load_dataset("builtin:breast_cancer")
    rows = np.arange(0, 569, 2)  # as if the odd rows were the sealed test part
    ids = fold_ids(dataset.y[rows], "binary", 4, seed=0)
    recorder = _Recorder()
    predictions = out_of_fold(dataset, "binary", rows, ids, {"probe": recorder})
    assert predictions["probe"].shape == (len(rows),) and not np.isnan(predictions["probe"]).any()
    assert len(recorder.fits) == 4
    for fitted_on, predicted in zip(recorder.fits, recorder.predicted):
        assert set(fitted_on).isdisjoint(predicted)
        assert set(fitted_on) | set(predicted) == set(rows)  # never a test row, every other row once
    np.testing.assert_array_equal(np.sort(np.concatenate(recorder.predicted)), rows)


def test_folds_are_refused_when_a_class_is_too_small():
    from tuner.core.errors import DataError

    with pytest.raises(DataError, match="fewer than --folds 5"):
        fold_ids(np.array([0] * 10 + [1] * 3), "binary", 5, seed=0)
