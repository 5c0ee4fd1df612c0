"""Leakage guards end to end: what the search and the refits may see, and what finalize refuses."""

import numpy as np
import optuna
import pandas as pd
import pytest

import tuner.evaluate.finalize as finalize_module
import tuner.search.runner as runner_module
from tuner.data import HOLDOUT, TEST, SealedSplit, make_split
from tuner.core.errors import SplitMismatchError
from tuner.evaluate.finalize import finalize_study
from tuner.search.objective import Objective
from tuner.pipeline.study_run import run_study

from conftest import tiny_study


def csv_study(tmp_path, write_study, name, rows=120, **split):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5.0, 2.0, rows), "b": rng.normal(size=rows)})
    frame["y"] = (frame["a"] + rng.normal(size=rows) > 5).astype(int)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    spec = tiny_study(name, data={"source": "rows.csv", "target": "y"}, families=["linear"],
                      split={"seed": 1, "validation_fraction": 0.2, **split})
    return frame, write_study(spec)


def test_the_objective_never_sees_test_or_holdout_rows(tmp_path, write_study, storage_url, tracking_uri, monkeypatch):
    seen = []

    class Recording(Objective):
        def __init__(self, config, folds, *args, **kwargs):
            seen.extend(folds)
            super().__init__(config, folds, *args, **kwargs)

    monkeypatch.setattr(runner_module, "Objective", Recording)
    _, path = csv_study(tmp_path, write_study, "no-peek", holdout_fraction=0.2)
    run_study(path, storage_url, tracking_uri, trials=1)
    study = optuna.load_study(study_name="no-peek", storage=storage_url)
    split = SealedSplit.from_record(study.user_attrs["tuner.split"])
    sealed = set(split.rows(TEST)) | set(split.rows(HOLDOUT))
    assert len(split.rows(HOLDOUT)) == 24
    [fold] = seen
    assert not sealed & (set(fold.train.rows) | set(fold.val.rows))
    assert len(fold.train) + len(fold.val) == len(split.search_rows())


def test_finalize_fits_preprocessing_on_search_rows_only(tmp_path, write_study, storage_url, tracking_uri,
                                                         monkeypatch):
    frame, path = csv_study(tmp_path, write_study, "refit-stats", holdout_fraction=0.2)
    run_study(path, storage_url, tracking_uri, trials=1)
    fitted = []
    real = finalize_module.prepare_parts

    def recording(dataset, task, rows, other):
        result = real(dataset, task, rows, other)
        fitted.append((rows, result[2]))
        return result

    monkeypatch.setattr(finalize_module, "prepare_parts", recording)
    finalize_study("refit-stats", storage_url, tracking_uri, top=1)
    [(rows, preprocessor)] = fitted
    scaler = preprocessor.table_.named_transformers_["numeric"][-1]
    np.testing.assert_allclose(scaler.mean_, frame[["a", "b"]].iloc[rows].mean().to_numpy(), rtol=1e-9)
    assert not np.allclose(scaler.mean_, frame[["a", "b"]].mean().to_numpy(), rtol=1e-6)  # not all rows


def test_a_changed_test_row_is_refused_before_any_look(tmp_path, write_study, storage_url, tracking_uri):
    frame, path = csv_study(tmp_path, write_study, "tampered-data")
    run_study(path, storage_url, tracking_uri, trials=1)
    study = optuna.load_study(study_name="tampered-data", storage=storage_url)
    test_row = SealedSplit.from_record(study.user_attrs["tuner.split"]).rows(TEST)[0]
    frame.loc[test_row, "b"] += 1e-6
    frame.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(SplitMismatchError, match="data changed since this study sealed its split"):
        finalize_study("tampered-data", storage_url, tracking_uri, study_file=str(path))
    assert "tuner.test_looks" not in study.user_attrs


def test_an_altered_fold_record_is_refused_before_any_look(write_study, storage_url, tracking_uri):
    spec = tiny_study("tampered-folds", families=["linear"], split={"folds": 2, "seed": 1})
    run_study(write_study(spec), storage_url, tracking_uri, trials=1)
    study = optuna.load_study(study_name="tampered-folds", storage=storage_url)
    record = study.user_attrs["tuner.split"]
    split = SealedSplit.from_record(record)
    swapped = make_split(np.zeros(len(split.parts)), "regression", 0.2, None, 9, "x", folds=2)
    study.set_user_attr("tuner.split", dict(record, folds=swapped.to_record()["folds"]))
    with pytest.raises(SplitMismatchError, match="altered"):
        finalize_study("tampered-folds", storage_url, tracking_uri)
    study.set_user_attr("tuner.split", {k: v for k, v in record.items() if k != "folds"})  # folds dropped
    with pytest.raises(SplitMismatchError, match="altered"):
        finalize_study("tampered-folds", storage_url, tracking_uri)
    assert "tuner.test_looks" not in study.user_attrs
