"""The realmlp family's own parts: the robust scaling's math, the periodic embedding's shape, label
smoothing in the loss, the safe-mode reload, its portfolio and each ingredient's switch. The family
contract (tests/models/test_families.py) covers it on the mixed table; here also on multiclass and
regression tables."""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest

from tuner.models import FAMILIES, ProblemSpec
from tuner.models.keras.realmlp import (SCALER, compile_realmlp, custom_objects, realmlp_loss,
                                        robust_statistics)
from tuner.models.keras.training import keras, release_memory

from test_families import problem

REALMLP = FAMILIES["realmlp"]


@pytest.fixture(autouse=True)
def _seeded_and_released():
    keras().utils.set_random_seed(0)
    yield
    release_memory()


def test_robust_statistics_are_median_and_inverse_iqr_with_pytabkit_fallbacks():
    numbers = np.array([[1, 7, 0], [2, 7, 0], [3, 7, 0], [4, 7, 0], [5, 7, 10]], dtype=np.float32)
    center, factor = robust_statistics(numbers)
    np.testing.assert_allclose(center, [3, 7, 0])
    # IQR 4 - 2 = 2; a constant column is zeroed; an IQR of 0 falls back to half the range (10 / 2)
    np.testing.assert_allclose(factor, [0.5, 0.0, 0.2])


@pytest.mark.parametrize("clip", [True, False])
def test_robust_scale_centres_scales_and_smoothly_clips(clip):
    layer = custom_objects().RobustScale(clip=clip)
    layer.build((None, 1))
    layer.set_statistics(np.array([[1.0], [2.0], [3.0], [4.0], [5.0]]))  # median 3, 1 / IQR = 0.5
    out = np.asarray(layer(np.array([[1.0], [3.0], [9.0], [603.0]], dtype=np.float32)))[:, 0]
    scaled = np.array([-1.0, 0.0, 3.0, 300.0])
    expected = scaled / np.sqrt(1 + (scaled / 3) ** 2) if clip else scaled
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    if clip:  # -1 -> -1 / sqrt(10 / 9), 3 -> 3 / sqrt(2), and far values approach 3
        assert out[2] == pytest.approx(3 / math.sqrt(2)) and 2.99 < out[3] < 3


def test_periodic_embedding_gives_each_number_dim_values_ending_in_the_number_itself():
    embedding = custom_objects().PeriodicEmbedding(frequencies=16, dim=4)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    out = np.asarray(embedding(x))
    assert out.shape == (7, 5 * 4) == embedding.compute_output_shape((7, 5))
    np.testing.assert_allclose(out.reshape(7, 5, 4)[:, :, -1], x)  # PBLD's densenet part


def test_label_smoothing_is_in_the_compiled_loss_config():
    binary = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=3)
    assert realmlp_loss(binary, 0.1).get_config()["label_smoothing"] == 0.1
    assert realmlp_loss(binary, 0.0).get_config()["label_smoothing"] == 0.0
    multiclass = ProblemSpec(task="multiclass", metric="log_loss", n_classes=3, n_features=3)
    smoothed = realmlp_loss(multiclass, 0.1)
    assert smoothed.get_config()["label_smoothing"] == 0.1
    # integer labels smoothed as their one-hot rows are by Keras' categorical loss
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    one_hot = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    reference = keras().losses.CategoricalCrossentropy(label_smoothing=0.1)(one_hot, probabilities)
    assert float(smoothed(np.array([0, 2]), probabilities)) == pytest.approx(float(reference), rel=1e-6)
    data = problem("mixed")
    member = REALMLP.build(REALMLP.default_params(data.spec), data.spec)
    compile_realmlp(member.model, data.spec, {**member.params, "label_smoothing": 0.0}, steps=10)
    assert member.model.loss.get_config()["label_smoothing"] == 0.0


def test_a_saved_model_loads_in_safe_mode_with_its_training_statistics(tmp_path):
    data = problem("mixed")
    member = REALMLP.build(REALMLP.default_params(data.spec), data.spec)
    member.fit(data.train.X("columns"), data.train.y, data.val.X("columns"), data.val.y)
    center, factor = robust_statistics(data.train.X("columns")["numeric"])
    np.testing.assert_allclose(np.asarray(member.model.get_layer(SCALER).center), center)
    path = member.save(tmp_path / "member")
    model = keras().models.load_model(path, safe_mode=True)  # no Lambda: every layer a registered class
    np.testing.assert_allclose(np.asarray(model.get_layer(SCALER).factor), factor)
    scores = member.predict_scores(data.val.X("columns"))
    np.testing.assert_array_equal(type(member).load(path).predict_scores(data.val.X("columns")), scores)


@pytest.mark.parametrize("problem_name", ["multiclass", "regression"])
def test_the_default_fits_multiclass_and_regression_tables(problem_name):
    data = problem(problem_name)
    defaults = REALMLP.default_params(data.spec)
    assert ("label_smoothing" in defaults) == data.spec.is_classification
    member = REALMLP.build(defaults, data.spec)
    member.fit(data.train.X("columns"), data.train.y, data.val.X("columns"), data.val.y)
    scores = member.predict_scores(data.val.X("columns"))
    assert np.isfinite(scores).all() and len(scores) == len(data.val)
    if data.spec.is_classification:
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("problem_name", ["mixed", "multiclass", "regression"])
def test_portfolio_starts_with_the_default_and_lies_in_the_space(problem_name):
    spec = problem(problem_name).spec
    configs = REALMLP.portfolio(spec)
    assert list(configs)[0] == "default" and configs["default"] == REALMLP.default_params(spec)
    for label, params in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FixedTrial warns when a value is outside its distribution
            assert REALMLP.search_space(optuna.trial.FixedTrial(params), spec) == params, label


def test_each_ingredient_switches_off():
    data = problem("mixed")
    plain = {**REALMLP.default_params(data.spec), "robust_scale": False, "smooth_clip": False,
             "periodic_embedding": False, "front_scale": False}
    kinds = {type(layer).__name__ for layer in REALMLP.build(plain, data.spec).model.layers}
    assert not kinds & {"RobustScale", "PeriodicEmbedding", "FeatureScale"}
    kinds = {type(layer).__name__ for layer in REALMLP.build(REALMLP.default_params(data.spec), data.spec).model.layers}
    assert {"RobustScale", "PeriodicEmbedding", "FeatureScale", "CategoryEncoding"} <= kinds


def test_a_table_is_needed():
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=64, views=("tabular",))
    assert "table" in REALMLP.unsupported_reason(spec)
    assert not REALMLP.picked and REALMLP.min_budget_s == FAMILIES["dense"].min_budget_s


def test_wide_categorical_columns_are_embedded_and_narrow_ones_one_hot(tmp_path):
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=50, max_epochs=2, patience=2,
                       views=("tabular", "native", "columns"), n_numeric=2, categorical_sizes=(4, 40))
    defaults = REALMLP.default_params(spec)
    assert defaults["embed_categories"] is True
    member = REALMLP.build(defaults, spec)
    kinds = [type(layer).__name__ for layer in member.model.layers]
    assert kinds.count("Embedding") == 1 and kinds.count("CategoryEncoding") == 1
    rng = np.random.default_rng(0)
    X = {"numeric": rng.normal(size=(64, 2)).astype(np.float32),
         "categorical": np.column_stack([rng.integers(0, 4, 64), rng.integers(0, 40, 64)]).astype(np.int32)}
    y = rng.integers(0, 2, 64)
    member.fit(X, y, X, y)
    loaded = type(member).load(member.save(tmp_path / "member"))
    np.testing.assert_array_equal(loaded.predict_scores(X), member.predict_scores(X))
