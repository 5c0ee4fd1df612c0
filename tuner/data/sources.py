"""Loading rows from scikit-learn's bundled sets and from the user's CSV, Parquet and NPZ files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuner.data.generated import GENERATED
from tuner.data.validation import validate_arrays, validate_table, validate_tokens
from tuner.core.errors import DataError

BUILTINS = {
    "breast_cancer": "binary: 569 tumours x 30 measurements (Wisconsin)",
    "wine": "multiclass: 178 wines x 13 chemical measurements, 3 cultivars",
    "iris": "multiclass: 150 flowers x 4 measurements, 3 species",
    "digits": "multiclass: 1,797 handwritten digits as 8x8x1 images",
    "diabetes": "regression: 442 patients x 10 baseline variables, disease progression",
    **{name: description for name, (_, description) in GENERATED.items()},
}


@dataclass(frozen=True)
class Dataset:
    """Features and target as loaded: a DataFrame for tables, an array (N, ...) for images/sequences."""

    name: str
    X: pd.DataFrame | np.ndarray
    y: np.ndarray
    fingerprint: str
    kind: str = "auto"  # "tokens": X holds integer token ids (study file `data.kind`)

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def is_table(self) -> bool:
        return isinstance(self.X, pd.DataFrame)


def load_dataset(source: str, target: str | None = None, base_dir: Path | None = None,
                 kind: str = "auto") -> Dataset:
    """Load and validate a data source named in a study file."""
    if source.startswith("builtin:"):
        X, y = _load_builtin(source.removeprefix("builtin:"))
    else:
        path = Path(source)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise DataError(f"data file {path} not found; fix `data.source` in the study file")
        if path.suffix.lower() == ".npz":
            X, y = _load_npz(path)
        else:
            X, y = _split_target(_read_table(path), target, path)
    if isinstance(X, pd.DataFrame):
        validate_table(X, y, source)
    else:
        validate_arrays(X, y, source)
    if kind == "tokens":
        validate_tokens(X, source)
    return Dataset(name=source, X=X, y=y, fingerprint=fingerprint(X, y), kind=kind)


def _load_builtin(name: str) -> tuple[pd.DataFrame | np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}; `tuner datasets` lists: {', '.join(BUILTINS)}")
    if name in GENERATED:
        return GENERATED[name][0]()
    if name == "digits":
        bunch = datasets.load_digits()
        return bunch.images[..., np.newaxis].astype(np.float32), bunch.target
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    return bunch.data, bunch.target.to_numpy()


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            _refuse_json(path)
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: it has no header and no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a readable {kind} file ({first}); check its format") from None


def _refuse_json(path: Path) -> None:
    """pandas reads a JSON document named .csv as a header with no rows; say what the file is instead."""
    with open(path, "rb") as file:
        start = file.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start in (b"{", b"["):
        raise DataError(f"{path} holds JSON, not CSV; convert it (e.g. pandas.read_json(...).to_csv(...)) "
                        "or give a .csv or .parquet file")


def _split_target(frame: pd.DataFrame, target: str | None, path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    if target is None:
        raise DataError(f"{path}: set `data.target` to the column to predict")
    if target not in frame.columns:
        import difflib

        near = difflib.get_close_matches(target, [str(c) for c in frame.columns], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f"; columns are {', '.join(map(str, frame.columns[:12]))}"
        raise DataError(f"{path}: target column {target!r} not found{hint}")
    return frame.drop(columns=[target]), frame[target].to_numpy()


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable NPZ archive ({exc}); save it with numpy.savez") from None
    missing = [key for key in ("X", "y") if key not in archive.files]
    if missing:
        raise DataError(f"{path}: NPZ needs arrays 'X' and 'y'; missing {', '.join(missing)} (has {', '.join(archive.files) or 'none'})")
    return archive["X"], archive["y"]


def fingerprint(X: pd.DataFrame | np.ndarray, y: np.ndarray) -> str:
    """A content hash of features and target: any changed cell changes it."""
    digest = hashlib.sha256()
    if isinstance(X, pd.DataFrame):
        digest.update("|".join(map(str, X.columns)).encode())
        digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    else:
        digest.update(str((X.shape, X.dtype.str)).encode())
        digest.update(np.ascontiguousarray(X).tobytes())
    digest.update(pd.util.hash_pandas_object(pd.Series(y), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
