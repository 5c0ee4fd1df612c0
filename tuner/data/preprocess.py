"""Imputation, scaling and encoding fitted on training rows only, then applied to the other parts.

Families ask for a *view* of the features: `tabular` (a float32 matrix, images flattened) or
`image` (N x H x W x C, standardised with training statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

from tuner.data.sources import Dataset

VIEWS = ("tabular", "image")


class FeaturePreprocessor:
    """scikit-learn-style fit / transform; learned attributes end in `_`."""

    def fit(self, X: pd.DataFrame | np.ndarray) -> FeaturePreprocessor:
        if isinstance(X, pd.DataFrame):
            categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]
            numeric = [c for c in X.columns if c not in categorical]
            self.table_ = ColumnTransformer(
                [
                    ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                    ("categorical", make_pipeline(
                        SimpleImputer(strategy="most_frequent"),
                        OneHotEncoder(handle_unknown="ignore", max_categories=30, sparse_output=False),
                    ), categorical),
                ],
                sparse_threshold=0.0,
            ).fit(X.astype({c: str for c in categorical}).replace({"nan": np.nan}))
            self.categorical_ = categorical
            self.image_shape_ = None
        else:
            flat = X.reshape(len(X), -1).astype(np.float64)
            self.flat_scaler_ = StandardScaler().fit(flat)
            self.image_mean_ = float(flat.mean())
            self.image_std_ = float(flat.std()) or 1.0
            self.image_shape_ = tuple(X.shape[1:]) if X.ndim == 4 else None
        return self

    def transform(self, X: pd.DataFrame | np.ndarray, view: str = "tabular") -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if view != "tabular":
                raise ValueError(f"a table has no {view} view")
            cleaned = X.astype({c: str for c in self.categorical_}).replace({"nan": np.nan})
            return self.table_.transform(cleaned).astype(np.float32)
        if view == "image":
            return ((X - self.image_mean_) / self.image_std_).astype(np.float32)
        return self.flat_scaler_.transform(X.reshape(len(X), -1)).astype(np.float32)

    @property
    def views(self) -> tuple[str, ...]:
        return ("tabular", "image") if getattr(self, "image_shape_", None) else ("tabular",)


@dataclass
class Part:
    """One part of the sealed split (train or validation), features encoded on demand per view."""

    name: str
    rows: np.ndarray
    raw: pd.DataFrame | np.ndarray
    y: np.ndarray
    preprocessor: FeaturePreprocessor
    _views: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def X(self, view: str) -> np.ndarray:
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
    preprocessor = FeaturePreprocessor().fit(take_rows(dataset, fit_rows))
    encoder = fit_target_encoder(dataset.y[fit_rows], task)
    fit_part = Part("train", fit_rows, take_rows(dataset, fit_rows), encode_target(encoder, dataset.y[fit_rows]), preprocessor)
    parts = {
        name: Part(name, rows, take_rows(dataset, rows), encode_target(encoder, dataset.y[rows]), preprocessor)
        for name, rows in other.items()
    }
    return fit_part, parts, preprocessor, encoder
