"""The study metrics agree with scikit-learn's reference implementations."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from tuner.core.metrics import METRICS


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
