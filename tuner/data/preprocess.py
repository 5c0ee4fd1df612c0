"""Imputation, scaling and encoding fitted on training rows only, then applied to the other parts.

Families ask for a *view* of the features:
- `tabular`: a float32 matrix (images and series flattened, text as capped TF-IDF, tokens as counts);
- `native`: for gradient-boosted trees, a float32 matrix of the raw numbers (missing values left as
  NaN for the booster to route) and each categorical column as one integer code (NaN when missing
  or unseen), then the text columns' TF-IDF; other data as in `tabular`. `native_categorical` in
  `input_shapes()` says which columns are codes; a column's rarest levels share one code beyond
  `NATIVE_MAX_CATEGORIES` (XGBoost and LightGBM overfit on many, HistGradientBoosting takes 255);
- `native_all_levels`: `native` with a code for every level training saw, for CatBoost, whose
  ordered target statistics learn from many levels (house_prices' 200-level neighbourhood: RMSE
  30,439 with every level, 32,993 with 64, `benchmarks/quality.py`'s table, one CatBoost);
- `image`: N x H x W x C, standardised with training statistics;
- `sequence`: N x T x F float series, each feature standardised on training rows;
- `tokens`: N x T integer token ids (study file `data.kind: tokens`), 0 = padding;
- `text`: N x 1 raw strings of the table's text columns, tokenised inside the model;
- `columns`: a dict of named inputs for functional models: `numeric` (standardised), `categorical`
  (integer codes, 0 = missing or unseen), `buckets` (quantile bin of each numeric column), `text`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import KBinsDiscretizer, LabelEncoder, OneHotEncoder, OrdinalEncoder, StandardScaler

from tuner.data.sources import Dataset

VIEWS = ("tabular", "native", "native_all_levels", "image", "sequence", "tokens", "text", "columns")
TEXT_MIN_MEAN_WORDS = 4  # an object column averaging this many words is free text, not a category
TEXT_MAX_TERMS = 256  # TF-IDF terms per text column in the tabular view, so trees and dense stay small
MAX_CATEGORIES = 50  # integer codes per categorical column in the columns view; rarer values share one
NATIVE_MAX_CATEGORIES = 64  # codes per categorical column in the native view (boosters split on them directly)
BUCKETS = 8  # quantile bins per numeric column (wide & deep crosses them)
TOKEN_COUNT_COLUMNS = 1000  # token ids counted in the tabular view of token data


def as_strings(values: pd.Series) -> pd.Series:
    """Each value as a string, NaN where it is missing (None or NaN), on every pandas.

    Not `astype(str)` alone: before pandas 3 that turns None and NaN into the strings "None" and
    "nan", which would be taken for categories instead of imputed.
    """
    return values.map(str, na_action="ignore").astype(object).where(values.notna(), np.nan)


def text_columns(X: pd.DataFrame) -> list[str]:
    """Object columns of free text: their values average at least TEXT_MIN_MEAN_WORDS words."""
    found = []
    for column in X.columns:
        values = X[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        present = values.dropna()
        if len(present) and present.astype(str).str.split().str.len().mean() >= TEXT_MIN_MEAN_WORDS:
            found.append(column)
    return found


def detect_views(X: pd.DataFrame | np.ndarray, kind: str = "auto") -> tuple[str, ...]:
    """The views these raw features offer, without fitting anything (used to vet families early)."""
    native = ("tabular", "native", "native_all_levels")
    if isinstance(X, pd.DataFrame):
        return (*native, "columns", "text") if text_columns(X) else (*native, "columns")
    if kind == "tokens":
        return (*native, "tokens")
    return (*native, *{4: ("image",), 3: ("sequence",)}.get(X.ndim, ()))


def probe_shapes(X: pd.DataFrame | np.ndarray, kind: str = "auto") -> dict:
    """Input shapes as far as they are known before fitting: enough to say which families fit."""
    shapes: dict = {"views": detect_views(X, kind),
                    "image_shape": tuple(X.shape[1:]) if not isinstance(X, pd.DataFrame) and X.ndim == 4 else None}
    if isinstance(X, pd.DataFrame):
        text = text_columns(X)
        categorical = [c for c in X.columns if c not in text and (
            not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
        shapes["n_numeric"] = X.shape[1] - len(text) - len(categorical)
        shapes["categorical_sizes"] = tuple(int(X[c].nunique()) + 1 for c in categorical)
    elif X.ndim == 3 or kind == "tokens":
        shapes["sequence_shape"] = tuple(X.shape[1:])
    return shapes


class FeaturePreprocessor:
    """scikit-learn-style fit / transform; learned attributes end in `_`."""

    def __init__(self, kind: str = "auto") -> None:
        self.kind = kind

    def fit(self, X: pd.DataFrame | np.ndarray) -> FeaturePreprocessor:
        self.image_shape_ = None
        self.views_ = detect_views(X, self.kind)
        if isinstance(X, pd.DataFrame):
            self._fit_table(X)
        elif self.kind == "tokens":
            self.vocabulary_size_ = int(X.max()) + 2  # ids seen in training, plus one for unseen ids
            self.sequence_shape_ = (X.shape[1],)
        else:
            flat = X.reshape(len(X), -1).astype(np.float64)
            self.flat_scaler_ = StandardScaler().fit(flat)
            self.image_mean_ = float(flat.mean())
            self.image_std_ = float(flat.std()) or 1.0
            self.image_shape_ = tuple(X.shape[1:]) if X.ndim == 4 else None
            if X.ndim == 3:
                self.sequence_shape_ = tuple(X.shape[1:])
                self.series_mean_ = X.mean(axis=(0, 1))
                self.series_std_ = np.where(X.std(axis=(0, 1)) > 0, X.std(axis=(0, 1)), 1.0)
        return self

    def _fit_table(self, X: pd.DataFrame) -> None:
        self.text_columns_ = text_columns(X)
        categorical = [c for c in X.columns if c not in self.text_columns_ and (
            not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
        numeric = [c for c in X.columns if c not in categorical and c not in self.text_columns_]
        self.categorical_, self.numeric_ = categorical, numeric
        cleaned = self._clean(X)
        self.table_ = ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("categorical", make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", max_categories=30, sparse_output=False),
                ), categorical),
                *[(f"text:{c}", TfidfVectorizer(max_features=TEXT_MAX_TERMS, sublinear_tf=True), c)
                  for c in self.text_columns_],
            ],
            sparse_threshold=0.0,
        ).fit(cleaned)
        if categorical:
            self.native_codes_ = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
                max_categories=NATIVE_MAX_CATEGORIES, dtype=np.float32).fit(cleaned[categorical])
            self.all_level_codes_ = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
                dtype=np.float32).fit(cleaned[categorical])
            self.codes_ = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                         max_categories=MAX_CATEGORIES).fit(cleaned[categorical].fillna("(missing)"))
        if numeric:
            imputed = self.table_.named_transformers_["numeric"][0].transform(cleaned[numeric])
            with warnings.catch_warnings():  # constant or few-valued columns get fewer bins; that is fine
                warnings.simplefilter("ignore")
                self.buckets_ = KBinsDiscretizer(n_bins=BUCKETS, encode="ordinal", strategy="quantile",
                                                 quantile_method="averaged_inverted_cdf").fit(imputed)

    def unlearned_columns(self, X: pd.DataFrame) -> list[str]:
        """A line per column of `X` that holds nothing training saw: empty in every row, or (a
        categorical) only levels training never saw. Training refuses empty columns, so each had values."""
        lines = []
        levels = dict(zip(self.categorical_, self.table_.named_transformers_["categorical"][-1].categories_)
                      if self.categorical_ else [])
        for column in [*self.numeric_, *self.categorical_, *self.text_columns_]:
            present = X[column].notna()
            if not present.any():
                lines.append(f"column {column!r} is empty in all {len(X)} rows (100%), where training had values; "
                             "its predictions rest on the training fill-in for it")
            elif column in levels:
                unseen = present & ~as_strings(X[column]).isin(set(levels[column]))
                if unseen.sum() == present.sum():
                    examples = ", ".join(repr(v) for v in X.loc[unseen, column].astype(str).unique()[:3])
                    lines.append(f"column {column!r} holds only levels training never saw ({examples}) in "
                                 f"{unseen.mean():.0%} of rows, the rest empty; the model treats them as unknown")
        return lines

    def _clean(self, X: pd.DataFrame) -> pd.DataFrame:
        cleaned = X.copy()
        for column in self.categorical_:
            cleaned[column] = as_strings(X[column])
        for column in self.text_columns_:
            cleaned[column] = X[column].fillna("").astype(str)
        return cleaned

    def transform(self, X: pd.DataFrame | np.ndarray, view: str = "tabular") -> np.ndarray | dict[str, np.ndarray]:
        if view not in self.views:
            raise ValueError(f"these features have no {view} view (they have {', '.join(self.views)})")
        if isinstance(X, pd.DataFrame):
            return self._transform_table(X, view)
        if self.kind == "tokens":
            ids = np.where(X < self.vocabulary_size_ - 1, X, self.vocabulary_size_ - 1).astype(np.int32)
            if view == "tokens":
                return ids
            counts = np.zeros((len(ids), TOKEN_COUNT_COLUMNS), dtype=np.float32)
            for row, kept in enumerate(ids):
                kept = kept[(kept > 0) & (kept < TOKEN_COUNT_COLUMNS)]
                np.add.at(counts[row], kept, 1.0)
            return np.log1p(counts)
        if view == "image":
            return ((X - self.image_mean_) / self.image_std_).astype(np.float32)
        if view == "sequence":
            return ((X - self.series_mean_) / self.series_std_).astype(np.float32)
        return self.flat_scaler_.transform(X.reshape(len(X), -1)).astype(np.float32)

    def _transform_table(self, X: pd.DataFrame, view: str) -> np.ndarray | dict[str, np.ndarray]:
        cleaned = self._clean(X)
        if view == "tabular":
            return self.table_.transform(cleaned).astype(np.float32)
        if view in ("native", "native_all_levels"):
            return self._native(cleaned, all_levels=view == "native_all_levels")
        if view == "text":
            return self._joined_text(cleaned)
        inputs: dict[str, np.ndarray] = {}
        if self.numeric_:
            numeric = self.table_.named_transformers_["numeric"]
            inputs["numeric"] = numeric.transform(cleaned[self.numeric_]).astype(np.float32)
            inputs["buckets"] = self.buckets_.transform(numeric[0].transform(cleaned[self.numeric_])).astype(np.int32)
        if self.categorical_:
            inputs["categorical"] = (self.codes_.transform(cleaned[self.categorical_].fillna("(missing)")) + 1).astype(np.int32)
        if self.text_columns_:
            inputs["text"] = self._joined_text(cleaned)
        return inputs

    def _native(self, cleaned: pd.DataFrame, all_levels: bool = False) -> np.ndarray:
        """Numbers as they are (NaN kept), categorical codes (NaN = missing or unseen; the rarest levels
        share one unless `all_levels`), text TF-IDF."""
        blocks = [cleaned[self.numeric_].to_numpy(dtype=np.float32, na_value=np.nan)] if self.numeric_ else []
        if self.categorical_:
            codes = self.all_level_codes_ if all_levels else self.native_codes_
            blocks.append(codes.transform(cleaned[self.categorical_]).astype(np.float32))
        for column in self.text_columns_:
            blocks.append(self.table_.named_transformers_[f"text:{column}"].transform(cleaned[column]).toarray()
                          .astype(np.float32))
        return np.hstack(blocks) if blocks else np.zeros((len(cleaned), 0), dtype=np.float32)

    def _joined_text(self, cleaned: pd.DataFrame) -> np.ndarray:
        joined = cleaned[self.text_columns_].agg(" ".join, axis=1) if len(self.text_columns_) > 1 else cleaned[self.text_columns_[0]]
        return joined.to_numpy(dtype=str).reshape(-1, 1)

    @property
    def views(self) -> tuple[str, ...]:
        return getattr(self, "views_", ("tabular",))

    def _code_counts(self) -> list[int]:
        """Codes per categorical column: frequent values, plus one shared code when rarer ones exist."""
        infrequent = getattr(self.codes_, "infrequent_categories_", None) or [None] * len(self.categorical_)
        return [len(c) - (len(rare) - 1 if rare is not None else 0) for c, rare in zip(self.codes_.categories_, infrequent)]

    def input_shapes(self) -> dict:
        """What Keras families need to size their inputs: ProblemSpec's input fields."""
        shapes: dict = {"views": self.views, "image_shape": self.image_shape_,
                        "sequence_shape": getattr(self, "sequence_shape_", None),
                        "vocabulary_size": getattr(self, "vocabulary_size_", 0)}
        if hasattr(self, "table_"):
            shapes["n_numeric"] = len(self.numeric_)
            start = len(self.numeric_)
            shapes["native_categorical"] = tuple(range(start, start + len(self.categorical_)))
            if self.categorical_:
                shapes["categorical_sizes"] = tuple(n + 1 for n in self._code_counts())
            if self.numeric_:
                shapes["bucket_sizes"] = tuple(int(n) for n in self.buckets_.n_bins_)
        return shapes


@dataclass
class Part:
    """One part of the sealed split (train or validation), features encoded on demand per view."""

    name: str
    rows: np.ndarray
    raw: pd.DataFrame | np.ndarray
    y: np.ndarray
    preprocessor: FeaturePreprocessor
    _views: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def X(self, view: str) -> np.ndarray | dict[str, np.ndarray]:
        if view not in self._views:
            self._views[view] = self.preprocessor.transform(self.raw, view)
        return self._views[view]

    def __len__(self) -> int:
        return len(self.rows)


def take_rows(dataset: Dataset, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    return dataset.X.iloc[rows].reset_index(drop=True) if dataset.is_table else dataset.X[rows]


def fit_target_encoder(y: np.ndarray, task: str) -> LabelEncoder | None:
    return LabelEncoder().fit(y) if task != "regression" else None


def encode_target(encoder: LabelEncoder | None, y: np.ndarray) -> np.ndarray:
    return encoder.transform(y) if encoder is not None else y.astype(np.float64)


def prepare_parts(dataset: Dataset, task: str, fit_rows: np.ndarray, other: dict[str, np.ndarray]
                  ) -> tuple[Part, dict[str, Part], FeaturePreprocessor, LabelEncoder | None]:
    """Fit preprocessing and the target encoder on `fit_rows` only and apply them to `other` parts."""
    preprocessor = FeaturePreprocessor(dataset.kind).fit(take_rows(dataset, fit_rows))
    encoder = fit_target_encoder(dataset.y[fit_rows], task)
    fit_part = Part("train", fit_rows, take_rows(dataset, fit_rows), encode_target(encoder, dataset.y[fit_rows]), preprocessor)
    parts = {
        name: Part(name, rows, take_rows(dataset, rows), encode_target(encoder, dataset.y[rows]), preprocessor)
        for name, rows in other.items()
    }
    return fit_part, parts, preprocessor, encoder
