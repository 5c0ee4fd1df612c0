"""The Keras families of issue 3, each built from FixedTrial params and fitted for a few epochs on tiny data."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest

from tuner.data.generated import generated_mixed, generated_series, generated_text
from tuner.data.preprocess import FeaturePreprocessor
from tuner.models import FAMILIES, ProblemSpec
from tuner.models.keras.training import KerasMember, keras, release_memory

FAST = {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 32}


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras().utils.set_random_seed(0)
    yield
    release_memory()


def prepared(X, y, task, kind="auto", n_train=240, n_val=80):
    """Preprocessing fitted on the first rows only, as the study does, and the spec it implies."""
    table = isinstance(X, pd.DataFrame)
    train, val = (X.iloc[:n_train], X.iloc[n_train:n_train + n_val]) if table else (X[:n_train], X[n_train:n_train + n_val])
    labels = np.unique(y, return_inverse=True)[1] if task != "regression" else y.astype(float)
    preprocessor = FeaturePreprocessor(kind).fit(train)
    spec = ProblemSpec(task=task, metric={"binary": "roc_auc", "multiclass": "accuracy"}.get(task, "rmse"),
                       n_classes=len(np.unique(labels)) if task == "multiclass" else 0,
                       n_features=preprocessor.transform(train, "tabular").shape[1], max_epochs=3, patience=3,
                       **preprocessor.input_shapes())
    return preprocessor, spec, (train, labels[:n_train]), (val, labels[n_train:n_train + n_val])


def fit(name, params, preprocessor, spec, train, val):
    family = FAMILIES[name]
    view = family.view_for(spec)
    built = family.search_space(optuna.trial.FixedTrial(params), spec)
    member = family.build(built, spec)
    X_val = preprocessor.transform(val[0], view)
    member.fit(preprocessor.transform(train[0], view), train[1], X_val, val[1])
    return member, X_val


def assert_learns(member, n_val, width):
    losses = member.curves_["train_loss"]
    assert losses[-1] < losses[0], losses
    scores = member.predict_scores
    assert member.best_step_ in range(1, len(losses) + 1)
    return scores


def digits(n=320):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:n, ..., None].astype(np.float32), bunch.target[:n]


CONVNET = {"conv": "separable", "filters": 8, "kernel_size": 3, "blocks": 3, "downsample": "strided",
           "batch_norm": True, "residual": True, "inception": True, "head": "flatten", "dropout": 0.1,
           "dense_units": 32, **FAST}


@pytest.mark.parametrize("overrides", [{}, {"conv": "conv2d", "downsample": "max_pool", "inception": False,
                                            "head": "global_average", "batch_norm": False, "dense_units": 0}])
def test_convnet_fits_8x8_digits_with_every_block_option(overrides):
    preprocessor, spec, train, val = prepared(*digits(), "multiclass")
    member, X_val = fit("convnet", {**CONVNET, **overrides}, preprocessor, spec, train, val)
    assert_learns(member, len(X_val), 10)
    assert member.predict_scores(X_val).shape == (len(X_val), 10)
    assert member.model.layers[0].output.shape[1:] == (8, 8, 1)


def test_convnet_refuses_a_table():
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=0, n_features=4)
    assert "images" in FAMILIES["convnet"].unsupported_reason(spec)


RNN = {"encoder": "gru", "units": 16, "stacked": 2, "dropout": 0.1, "bidirectional": True,
       "recurrent_dropout": 0.1, "conv_front": True, **FAST}


def test_sequence_reads_raw_text_and_a_reloaded_model_takes_strings(tmp_path):
    X, y = generated_text(rows=360)
    preprocessor, spec, train, val = prepared(X, y, "binary")
    assert FAMILIES["sequence"].view_for(spec) == "text"
    params = {"max_tokens": 1000, "sequence_length": 16, "embedding_dim": 16, **RNN, "conv_front": False}
    member, X_val = fit("sequence", params, preprocessor, spec, train, val)
    assert_learns(member, len(X_val), 2)
    assert X_val.dtype.kind == "U"  # raw strings in, tokenised inside the model
    before = member.predict_scores(X_val)
    assert before.shape == (len(X_val), 2)
    reloaded = KerasMember.load(member.save(tmp_path / "text"))
    np.testing.assert_array_equal(reloaded.predict_scores(X_val), before)
    assert reloaded.predict_scores(np.array([["a wonderful superb film"]])).shape == (1, 2)


def test_sequence_on_token_ids_with_conv1d_encoder():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 320)
    X = rng.integers(1, 50, (320, 20))
    X[:, :3] = np.where(y[:, None] == 1, 7, 9)  # the label-bearing token
    X[:, -4:] = 0  # padding
    preprocessor, spec, train, val = prepared(X, y, "binary", kind="tokens")
    assert FAMILIES["sequence"].view_for(spec) == "tokens" and spec.vocabulary_size == 51
    params = {"embedding_dim": 8, "encoder": "conv1d", "units": 16, "stacked": 2, "dropout": 0.0, **FAST}
    member, X_val = fit("sequence", params, preprocessor, spec, train, val)
    assert_learns(member, len(X_val), 2)
    assert member.predict_scores(X_val).shape == (len(X_val), 2)


def test_sequence_on_numeric_series_with_lstm():
    preprocessor, spec, train, val = prepared(*generated_series(rows=320), "multiclass")
    assert FAMILIES["sequence"].view_for(spec) == "sequence" and spec.sequence_shape == (40, 2)
    params = {**RNN, "encoder": "lstm", "stacked": 1, "bidirectional": False}
    member, X_val = fit("sequence", params, preprocessor, spec, train, val)
    assert_learns(member, len(X_val), 3)
    assert member.predict_scores(X_val).shape == (len(X_val), 3)


def test_sequence_refuses_a_plain_numeric_table():
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=0, n_features=4, views=("tabular", "columns"), n_numeric=4)
    assert "text column" in FAMILIES["sequence"].unsupported_reason(spec)


def test_multi_input_has_one_branch_per_kind_and_reloads_identically(tmp_path):
    preprocessor, spec, train, val = prepared(*generated_mixed(rows=360), "binary")
    params = {"numeric_units": 16, "category_dim": 4, "text_max_tokens": 1000, "text_sequence_length": 16,
              "text_embedding_dim": 8, "encoder": "gru", "units": 8, "head_units": 16, "dropout": 0.1, **FAST}
    member, X_val = fit("multi_input", params, preprocessor, spec, train, val)
    assert sorted(t.name for t in member.model.inputs) == ["categorical", "numeric", "text"]
    assert_learns(member, len(val[1]), 2)
    before = member.predict_scores(X_val)
    assert before.shape == (len(val[1]), 2)
    reloaded = KerasMember.load(member.save(tmp_path / "mixed.keras"))
    np.testing.assert_array_equal(reloaded.predict_scores(X_val), before)


def test_multi_input_refuses_a_single_kind_table():
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=0, n_features=4, views=("tabular", "columns"), n_numeric=4)
    assert "one kind" in FAMILIES["multi_input"].unsupported_reason(spec)


WIDE_DEEP = {"cross_columns": 3, "hash_bins": 64, "layers": 2, "units": 32, "dropout": 0.1, "category_dim": 4, **FAST}


def test_wide_deep_crosses_categoricals_and_buckets_and_reloads_identically(tmp_path):
    preprocessor, spec, train, val = prepared(*generated_mixed(rows=360), "binary")
    member, X_val = fit("wide_deep", WIDE_DEEP, preprocessor, spec, train, val)
    crossings = [layer for layer in member.model.layers if type(layer).__name__ == "HashedCrossing"]
    assert len(crossings) == 3  # every pair among the first three wide columns
    assert_learns(member, len(val[1]), 2)
    before = member.predict_scores(X_val)
    reloaded = KerasMember.load(member.save(tmp_path / "wide"))
    np.testing.assert_array_equal(reloaded.predict_scores(X_val), before)


def test_wide_deep_regression_on_a_numeric_table():
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    preprocessor, spec, train, val = prepared(bunch.data, bunch.target.to_numpy(), "regression")
    params = {k: v for k, v in WIDE_DEEP.items() if k != "category_dim"}
    member, X_val = fit("wide_deep", params, preprocessor, spec, train, val)
    assert_learns(member, len(val[1]), 1)
    assert member.predict_scores(X_val).shape == (len(val[1]),)


def test_study_batch_size_and_reduce_lr_override_the_search():
    preprocessor, spec, train, val = prepared(*digits(), "multiclass")
    spec = dataclasses.replace(spec, batch_size=50, reduce_lr="search", max_epochs=1)
    params = FAMILIES["convnet"].search_space(optuna.trial.FixedTrial({**CONVNET, "reduce_lr": True}), spec)
    assert params["batch_size"] == 50 and params["reduce_lr"] is True
    member = FAMILIES["convnet"].build(params, spec)
    assert member.batch_size == 50 and member.reduce_lr
    member.fit(preprocessor.transform(train[0], "image"), train[1], preprocessor.transform(val[0], "image"), val[1])
    assert "learning_rate" in member.curves_


def test_a_pruner_stops_a_keras_trial_after_its_first_epoch():
    preprocessor, spec, train, val = prepared(*digits(), "multiclass")
    spec = dataclasses.replace(spec, max_epochs=5, patience=5)
    X, X_val = preprocessor.transform(train[0], "image"), preprocessor.transform(val[0], "image")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    members = []

    def objective(trial):
        member = FAMILIES["convnet"].build({**CONVNET, "blocks": 1}, spec)
        members.append(member)
        member.fit(X, train[1], X_val, val[1], trial=trial)
        return 0.0

    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert len(members[0].curves_["val_accuracy"]) == 1  # stopped after the first reported epoch
