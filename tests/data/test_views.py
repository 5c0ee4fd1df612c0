"""The feature views issue 3 adds: text detection, tokens, series, columns, and the probe used to vet families."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuner.data.generated import generated_mixed, generated_series, generated_text
from tuner.data.preprocess import TEXT_MAX_TERMS, FeaturePreprocessor, probe_shapes, text_columns
from tuner.data.sources import BUILTINS, load_dataset
from tuner.core.errors import DataError


def test_free_text_is_text_and_short_labels_stay_categorical():
    X, _ = generated_mixed(rows=200)
    assert text_columns(X) == ["support_note"]
    preprocessor = FeaturePreprocessor().fit(X)
    assert preprocessor.categorical_ == ["plan", "region"]
    tabular = preprocessor.transform(X, "tabular")
    assert 2 + 9 < tabular.shape[1] <= 2 + 9 + TEXT_MAX_TERMS  # numbers, one-hot, capped TF-IDF


def test_tfidf_vocabulary_is_capped_for_trees_and_dense():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(2000)]
    X = pd.DataFrame({"note": [" ".join(rng.choice(words, 8)) for _ in range(300)], "x": rng.normal(size=300)})
    assert FeaturePreprocessor().fit(X).transform(X, "tabular").shape == (300, 1 + TEXT_MAX_TERMS)


def test_columns_view_codes_missing_and_unseen_categories_as_zero():
    X, _ = generated_mixed(rows=300)
    preprocessor = FeaturePreprocessor().fit(X.iloc[:200])
    unseen = X.iloc[200:203].copy()
    unseen["region"] = "atlantis"
    codes = preprocessor.transform(unseen, "columns")["categorical"]
    assert (codes[:, 1] == 0).all()
    shapes = preprocessor.input_shapes()
    assert shapes["categorical_sizes"] == (5, 6)  # 3 plans + "(missing)" + unseen; 5 regions + unseen
    assert shapes["bucket_sizes"] == (8, 8)


def test_text_view_is_raw_strings_and_a_table_without_text_has_none():
    X, _ = generated_text(rows=50)
    text = FeaturePreprocessor().fit(X).transform(X, "text")
    assert text.shape == (50, 1) and text[0, 0] == X.review[0]
    numeric = pd.DataFrame({"a": np.arange(10.0), "b": list("xyxyxyxyxy")})
    with pytest.raises(ValueError, match="no text view"):
        FeaturePreprocessor().fit(numeric).transform(numeric, "text")


def test_series_are_standardised_per_feature_on_training_rows_only():
    X, _ = generated_series(rows=200)
    preprocessor = FeaturePreprocessor().fit(X[:100])
    train = preprocessor.transform(X[:100], "sequence")
    np.testing.assert_allclose(train.mean(axis=(0, 1)), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=(0, 1)), 1.0, atol=1e-4)
    assert preprocessor.views == ("tabular", "native", "native_all_levels", "sequence")
    assert preprocessor.transform(X[100:], "tabular").shape == (100, 80)


def test_token_ids_unseen_in_training_share_the_last_id(tmp_path):
    X = np.array([[1, 2, 3, 0], [4, 5, 0, 0]] * 10)
    y = np.array([0, 1] * 10)
    np.savez(tmp_path / "tokens.npz", X=X, y=y)
    dataset = load_dataset(str(tmp_path / "tokens.npz"), kind="tokens")
    preprocessor = FeaturePreprocessor(dataset.kind).fit(dataset.X)
    assert preprocessor.vocabulary_size_ == 7
    assert preprocessor.transform(np.array([[9, 1, 0, 0]]), "tokens").tolist() == [[6, 1, 0, 0]]
    assert preprocessor.transform(X[:1], "tabular")[0, [1, 2, 3]].tolist() == pytest.approx([np.log(2)] * 3)


def test_tokens_kind_refuses_float_features(tmp_path):
    np.savez(tmp_path / "floats.npz", X=np.random.rand(20, 5), y=np.arange(20) % 2)
    with pytest.raises(DataError, match="kind tokens needs X as integers"):
        load_dataset(str(tmp_path / "floats.npz"), kind="tokens")


def test_generated_sets_are_listed_deterministic_and_probe_without_fitting():
    assert {"generated_text", "generated_mixed", "generated_series"} <= set(BUILTINS)
    a, b = load_dataset("builtin:generated_mixed"), load_dataset("builtin:generated_mixed")
    assert a.fingerprint == b.fingerprint
    probe = probe_shapes(a.X)
    assert probe["views"] == ("tabular", "native", "native_all_levels", "columns", "text") and probe["n_numeric"] == 2
    assert len(probe["categorical_sizes"]) == 2


def test_mixed_precision_is_not_applied_without_a_gpu():
    from tuner.core.devices import configure_mixed_precision, configure_tensorflow

    if configure_tensorflow():
        pytest.skip("a GPU is present: mixed precision would apply")
    assert configure_mixed_precision(True) == "float32"
