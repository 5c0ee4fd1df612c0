"""The fitted-ensemble contract export relies on: save / load round trips with identical predictions."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ensemble_fixtures import tiny_ensemble
from tuner.ensemble import FittedEnsemble, WeightedAverage
from tuner.ensemble.store import read_build, write_build
from tuner.core.errors import TunerError


@pytest.mark.parametrize("source,task,metric", [("builtin:breast_cancer", "binary", "roc_auc"),
                                                ("builtin:diabetes", "regression", "rmse")])
def test_saved_ensemble_predicts_identically(tmp_path, source, task, metric):
    ensemble, rest = tiny_ensemble(source, task, metric)
    before = ensemble.predict_frame(rest.raw)
    loaded = FittedEnsemble.load(ensemble.save(tmp_path / "blend"))
    after = loaded.predict_frame(rest.raw)
    assert list(after.columns) == list(before.columns)
    numeric = [c for c in before.columns if c != "prediction" or task == "regression"]
    np.testing.assert_allclose(after[numeric].to_numpy(dtype=float), before[numeric].to_numpy(dtype=float), rtol=1e-6)
    assert (after["prediction"] == before["prediction"]).all()
    assert len(loaded.example) == 5
    if task != "regression":
        assert np.allclose(after.filter(like="proba_").sum(axis=1), 1.0)


def test_weights_must_be_a_convex_combination():
    with pytest.raises(ValueError, match="non-negative and sum to one"):
        WeightedAverage(np.array([0.7, 0.7]))
    with pytest.raises(ValueError, match="non-negative"):
        WeightedAverage(np.array([1.5, -0.5]))


def test_a_failed_build_keeps_the_previous_one(tmp_path):
    write_build("blend", {"chosen": "first"}, lambda folder: (folder / "first").mkdir(), root=tmp_path)

    def broken(folder):
        (folder / "second").mkdir()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_build("blend", {"chosen": "second"}, broken, root=tmp_path)
    assert read_build("blend", root=tmp_path)["chosen"] == "first"
    assert [p.name for p in (tmp_path / ".built").iterdir()] == ["blend"]
    with pytest.raises(TunerError, match="run `tuner ensemble build other"):
        read_build("other", root=tmp_path)
