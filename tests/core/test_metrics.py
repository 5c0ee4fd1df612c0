"""The study metrics agree with scikit-learn's reference implementations."""

import numpy as np
import optuna
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from tuner.core.metrics import METRICS, direction_sign, renormalise


@pytest.mark.parametrize("seed", range(5))
def test_rank_based_roc_auc_equals_scikit_learns_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    positive = np.round(rng.uniform(size=200), 1)  # one decimal: many tied scores
    proba = np.column_stack([1 - positive, positive])
    assert METRICS["roc_auc"].score(y, proba) == pytest.approx(skm.roc_auc_score(y, positive), abs=1e-12)


def test_roc_auc_of_one_class_is_undefined_and_non_finite_scores_are_refused():
    proba = np.column_stack([np.full(4, 0.5), np.array([0.1, 0.4, 0.35, 0.8])])
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):  # scikit-learn's contract: NaN
        assert np.isnan(METRICS["roc_auc"].score(np.ones(4, dtype=int), proba))
    proba[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        METRICS["roc_auc"].score(np.array([0, 1, 0, 1]), proba)


def test_direction_sign_reads_metric_directions_and_optuna_study_directions_alike():
    assert direction_sign("maximize") == 1 and direction_sign("minimize") == -1
    assert direction_sign(optuna.study.StudyDirection.MAXIMIZE) == 1
    assert direction_sign(optuna.study.StudyDirection.MINIMIZE) == -1
    assert [METRICS[m].sign for m in ("roc_auc", "log_loss", "r2", "rmse")] == [1, -1, 1, -1]
    assert METRICS["accuracy"].better(0.9, 0.8) and not METRICS["accuracy"].better(0.8, 0.9)
    assert METRICS["mae"].better(0.8, 0.9) and not METRICS["mae"].better(0.9, 0.8)


def test_renormalise_makes_float32_probability_rows_sum_to_one_and_leaves_regression_values():
    proba = np.array([[0.2, 0.3, 0.5001], [0.7, 0.2, 0.1]], dtype=np.float32)
    rows = renormalise(proba)
    assert rows.dtype == np.float64 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-15, rtol=0)
    assert np.array_equal(rows, proba.astype(np.float64) / proba.astype(np.float64).sum(axis=1, keepdims=True))
    values = np.array([1.5, -2.0, 3.25])
    assert np.array_equal(renormalise(values), values)
