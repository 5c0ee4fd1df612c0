"""Refuse data that cannot be searched honestly, with the column and the fix in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuner.core.errors import DataError

MAX_CLASSES = 50


def validate_table(X: pd.DataFrame, y: np.ndarray, source: str) -> None:
    if len(X) == 0 or X.shape[1] == 0:
        raise DataError(f"{source} has no rows or no feature columns; give a file with data")
    _validate_target(y, source)
    for column in X.columns:
        values = X[column]
        if values.isna().all():
            raise DataError(f"{source}: column {column!r} is empty (all values missing); drop it")
        if pd.api.types.is_numeric_dtype(values):
            if np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any():
                raise DataError(f"{source}: column {column!r} holds infinite values; replace them or leave them blank")
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            _refuse_mixed_types(values, column, source)


def _refuse_mixed_types(values: pd.Series, column: str, source: str) -> None:
    present = values.dropna()
    kinds = {type(v) for v in present}
    if kinds <= {str}:
        as_numbers = pd.to_numeric(present, errors="coerce")
        share = float(as_numbers.notna().mean())
        if 0.5 <= share < 1.0:
            bad = present[as_numbers.isna()].iloc[0]
            raise DataError(
                f"{source}: column {column!r} mixes numbers and text (e.g. {bad!r}); "
                "make it all numeric or all text"
            )
    elif len(kinds) > 1:
        raise DataError(f"{source}: column {column!r} mixes value types ({', '.join(sorted(k.__name__ for k in kinds))}); make it one type")


def validate_arrays(X: np.ndarray, y: np.ndarray, source: str) -> None:
    if X.ndim < 2 or y.ndim != 1:
        raise DataError(f"{source}: X must be (rows, features...) and y (rows,); got X{X.shape} and y{y.shape}")
    if len(X) != len(y):
        raise DataError(f"{source}: X has {len(X)} rows but y has {len(y)}; they must match")
    if len(X) == 0:
        raise DataError(f"{source} has no rows")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{source}: X must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise DataError(f"{source}: X holds NaN or infinite values; impute or drop those rows")
    _validate_target(y, source)


def validate_tokens(X: np.ndarray, source: str) -> None:
    """`data.kind: tokens` promises rows of non-negative integer ids, 0 being padding."""
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.integer):
        raise DataError(f"{source}: kind tokens needs X as integers (rows, positions); got {X.dtype} {X.shape}; "
                        "drop `kind: tokens` for numeric data")
    if X.min() < 0:
        raise DataError(f"{source}: token ids must be >= 0 (0 = padding); found {int(X.min())}")


def _validate_target(y: np.ndarray, source: str) -> None:
    missing = pd.isna(y)
    if missing.any():
        raise DataError(f"{source}: the target has {int(missing.sum())} missing values; drop those rows")
    if len(np.unique(y)) < 2:
        raise DataError(f"{source}: the target has a single value ({y[0]!r}); there is nothing to learn")


def infer_task(y: np.ndarray) -> str:
    """binary / multiclass / regression from the target's values (a study file may say it instead)."""
    values = pd.Series(y)
    n_unique = values.nunique()
    if n_unique == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "multiclass"
    integral = pd.api.types.is_integer_dtype(values) or bool(np.all(np.mod(values, 1) == 0))
    return "multiclass" if integral and n_unique <= min(MAX_CLASSES, max(2, len(values) // 5)) else "regression"


def check_task(y: np.ndarray, task: str, source: str) -> None:
    """Refuse a task the target cannot carry (a regression on strings, 2,000 classes...)."""
    n_unique = pd.Series(y).nunique()
    if task == "regression" and not pd.api.types.is_numeric_dtype(pd.Series(y)):
        raise DataError(f"{source}: task is regression but the target is not numeric; set task: multiclass")
    if task == "binary" and n_unique != 2:
        raise DataError(f"{source}: task is binary but the target has {n_unique} values; set task: multiclass")
    if task == "multiclass" and n_unique > MAX_CLASSES:
        raise DataError(f"{source}: {n_unique} classes is more than {MAX_CLASSES}; set task: regression or group classes")
