"""The LightGBM and CatBoost families beyond the contract suite (tests/models/test_families.py, which
also checks their save / load round trip and their per-round pruning): native categoricals and
missing values, early stopping, a refit's fixed rounds, the study's deadline, one seed one model,
bags in the libraries' own files, and a clear word when the package is missing."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import pytest

from tuner.core.deadline import trial_deadline
from tuner.models import FAMILIES, ProblemSpec

BOOSTERS = ["lightgbm", "catboost"]


def native_table(view: str = "native"):
    """120 rows: a number with gaps and a colour with gaps, as a booster's `view` gives them."""
    from tuner.data.preprocess import FeaturePreprocessor

    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0] * 30, "colour": ["red", "blue", None, "green"] * 30})
    preprocessor = FeaturePreprocessor().fit(frame)
    unseen = preprocessor.transform(pd.DataFrame({"x": [np.nan], "colour": ["purple"]}), view)
    return preprocessor.transform(frame, view), np.array([0, 1, 1, 0] * 30), unseen, preprocessor.input_shapes()


def noise(rows: int = 300, seed: int = 0):
    """Labels unrelated to the features: validation quality peaks early, so early stopping must act."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 5)).astype(np.float32), rng.integers(0, 2, rows)


def spec_for(**fields) -> ProblemSpec:
    return ProblemSpec(**{"task": "binary", "metric": "roc_auc", "n_classes": 2, "n_features": 5, **fields})


def fit(name: str, spec: ProblemSpec, X, y, X_val=None, y_val=None, **params):
    family = FAMILIES[name]
    return family.build({**family.default_params(spec), **params}, spec).fit(X, y, X_val, y_val)


def test_categorical_codes_are_split_as_categories_and_missing_values_predict():
    *_, shapes = native_table()
    spec = spec_for(n_features=2, max_rounds=30, patience=2, **shapes)
    views = {name: FAMILIES[name].view_for(spec) for name in BOOSTERS}
    assert views == {"lightgbm": "native", "catboost": "native_all_levels"}  # CatBoost learns from every level
    for name in BOOSTERS:
        native, y, unseen, _ = native_table(views[name])
        member = fit(name, spec, native[:80], y[:80], native[80:], y[80:])
        assert np.isfinite(member.predict_scores(native)).all() and np.isfinite(member.predict_scores(unseen)).all()
    native, y, _, _ = native_table()
    lightgbm = fit("lightgbm", spec, native, y).model_.dump_model()["feature_infos"]
    assert lightgbm["Column_0"]["values"] == [] and lightgbm["Column_1"]["values"]  # a category list: categorical
    assert fit("catboost", spec, *native_table(views["catboost"])[:2]).model_.get_cat_feature_indices() == [1]


def test_catboost_reads_a_code_for_every_level_where_the_other_boosters_share_one_for_the_rarest():
    from tuner.data.preprocess import NATIVE_MAX_CATEGORIES, FeaturePreprocessor

    levels = [f"street {i}" for i in range(3 * NATIVE_MAX_CATEGORIES)]
    frame = pd.DataFrame({"x": np.arange(len(levels) * 2, dtype=float), "street": levels * 2})
    preprocessor = FeaturePreprocessor().fit(frame)
    capped, every = (preprocessor.transform(frame, view)[:, 1] for view in ("native", "native_all_levels"))
    assert len(np.unique(capped)) == NATIVE_MAX_CATEGORIES and len(np.unique(every)) == len(levels)
    unseen = pd.DataFrame({"x": [1.0], "street": ["a street never seen"]})
    assert np.isnan(preprocessor.transform(unseen, "native_all_levels")[0, 1])


@pytest.mark.parametrize("name", BOOSTERS)
def test_early_stopping_keeps_the_best_round_and_the_saved_model_holds_only_those(name, tmp_path):
    X, y = noise()
    spec = spec_for(max_rounds=500, patience=2)
    member = fit(name, spec, X[:200], y[:200], X[200:], y[200:])
    curve = next(iter(member.curves_.values()))
    assert 1 <= member.best_step_ < 500 and len(curve) == member.best_step_ + 5 * spec.patience
    assert curve.index(max(curve)) + 1 == member.best_step_  # AUC: the first highest round
    loaded = type(member).load(member.save(tmp_path / "member"))
    trees = loaded.model_.current_iteration() if name == "lightgbm" else loaded.model_.tree_count_
    assert trees == member.best_step_


@pytest.mark.parametrize("name", BOOSTERS)
def test_a_refit_without_validation_rows_fits_exactly_its_rounds(name):
    X, y = noise()
    member = fit(name, spec_for(max_rounds=7), X, y)
    trees = member.model_.current_iteration() if name == "lightgbm" else member.model_.tree_count_
    assert member.best_step_ == trees == 7 and member.curves_ == {}


@pytest.mark.parametrize("name", BOOSTERS)
def test_the_deadline_stops_a_search_fit_after_its_first_round(name):
    X, y = noise()
    spec = spec_for(max_rounds=60, patience=50)
    with trial_deadline(time.monotonic()):  # already passed
        member = fit(name, spec, X[:200], y[:200], X[200:], y[200:])
    assert len(next(iter(member.curves_.values()))) == 1 and member.best_step_ == 1
    assert np.isfinite(member.predict_scores(X)).all()


@pytest.mark.parametrize("name, sampled", [("lightgbm", {"bagging_fraction": 0.6, "feature_fraction": 0.5}),
                                            ("catboost", {"random_strength": 5.0})])
def test_one_seed_gives_one_model_and_another_seed_another(name, sampled):
    X, y = noise(seed=3)
    X[:, 0] += y  # something to learn, so the random choices matter
    scores = [fit(name, spec_for(max_rounds=30, seed=seed), X, y, **sampled).predict_scores(X) for seed in (1, 1, 2)]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert not np.array_equal(scores[0], scores[2])


@pytest.mark.parametrize("name, suffix", [("lightgbm", ".txt"), ("catboost", ".cbm")])
def test_a_bag_writes_its_fold_models_in_the_librarys_own_format(name, suffix, tmp_path):
    from tuner.models.bagged_member import read_fold_models, write_fold_models

    X, y = noise()
    folds = [fit(name, spec_for(max_rounds=10, seed=seed), X, y) for seed in (0, 1)]
    write_fold_models(folds, tmp_path / "folds")
    written = {path.name for path in (tmp_path / "folds").iterdir()}
    assert written == {"classes.json", "fold-00.member.json", f"fold-00{suffix}", "fold-01.member.json",
                       f"fold-01{suffix}"}  # no joblib pickle
    for fold, again in zip(folds, read_fold_models(tmp_path / "folds")):
        np.testing.assert_array_equal(again.predict_scores(X), fold.predict_scores(X))


@pytest.mark.parametrize("name", BOOSTERS)
def test_a_family_whose_package_is_missing_names_it(name, monkeypatch):
    assert FAMILIES[name].missing_package() is None
    monkeypatch.setitem(sys.modules, name, None)  # what an uninstalled package looks like to Python
    assert FAMILIES[name].missing_package() == name


def test_the_boosters_defaults_come_after_the_cheap_families_and_before_the_networks():
    from tuner.models import portfolio_order

    order = portfolio_order(list(FAMILIES))
    keras = [name for name in order if FAMILIES[name].uses_tensorflow]
    assert order.index("xgboost") < order.index("random_forest") < order.index("lightgbm") < order.index("catboost")
    assert order.index("catboost") < min(order.index(name) for name in keras)


def test_lightgbm_fits_small_tables_on_one_thread_and_large_ones_on_every_core():
    """Its OpenMP threads spin while they wait: on a small table, sharing two cores, one thread is 5-10x faster."""
    from tuner.core.threads import usable_cores
    from tuner.models.estimators.lightgbm import THREADED_FIT_ROWS

    X, y = noise()
    member = fit("lightgbm", spec_for(max_rounds=3), X, y)
    assert member.model_.params["num_threads"] == 1
    assert member._booster_params(THREADED_FIT_ROWS)["num_threads"] == usable_cores()  # its share: every core alone
