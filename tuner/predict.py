"""`tuner predict`: score a CSV or Parquet file with an exported model, after checking its columns.

The columns are checked against the model's signature before the model (and TensorFlow) loads, so
a missing or misspelled column costs a second, not a model load: one line names it and the close
match. Numbers are sent as float64 and categoricals as strings, the types the signature declares.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tuner.data.preprocess import as_strings
from tuner.data.sources import _read_table
from tuner.errors import DataError, TunerError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class Predictions:
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def predict_file(model_dir: str | Path, data: str | Path, output: str | Path | None = None) -> Predictions:
    """Predictions for every row of `data`, written to `output` (.csv or .parquet) when given."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model_dir, data = Path(model_dir), Path(data)
    schema = input_schema(model_dir)
    if output is not None and Path(output).suffix.lower() not in TABLE_SUFFIXES:
        raise TunerError(f"-o {output}: write predictions to a .csv or .parquet file")
    rows = read_rows(data)
    model_input, notes = conform(rows, schema, data.name)
    try:
        frame = mlflow.pyfunc.load_model(str(model_dir)).predict(model_input)
    except MlflowException as exc:
        reason = exc.message.rsplit("Error: ", 1)[-1].strip().splitlines()[0][:300]
        raise DataError(f"{data.name}: the model refused these rows ({reason})") from None
    if output is not None:
        write_table(frame, Path(output))
    return Predictions(frame, notes)


def input_schema(model_dir: Path):
    """The signature's input schema, read from MLmodel without loading the model."""
    from mlflow.models import Model

    if not (model_dir / "MLmodel").is_file():
        raise TunerError(f"{model_dir} is not an exported model (no MLmodel file); run `tuner export NAME` first")
    schema = Model.load(str(model_dir)).get_input_schema()
    if schema is None:
        raise TunerError(f"{model_dir} has no input signature, so its columns cannot be checked; re-export it")
    return schema


def read_rows(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{path}: tuner predict reads .csv or .parquet files")
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    rows = _read_table(path)
    if rows.empty:
        raise DataError(f"{path} has no rows to predict")
    return rows


def conform(rows: pd.DataFrame, schema, source: str) -> tuple[pd.DataFrame | np.ndarray, list[str]]:
    """The rows as the signature takes them; one-line errors for missing, misspelled or mistyped columns."""
    if schema.is_tensor_spec():
        return _conform_array(rows, schema.inputs[0], source), []
    expected = schema.input_names()
    present = [str(c) for c in rows.columns]
    rows = rows.set_axis(present, axis=1)
    missing = [c for c in expected if c not in present]
    extra = [c for c in present if c not in expected]
    if missing:
        raise DataError(f"{source}: " + "; ".join(_missing(c, extra) for c in missing)
                        + f" (the model takes {', '.join(expected)})")
    notes = [f"ignored {len(extra)} column(s) the model does not take: {', '.join(extra)}"] if extra else []
    types = schema.input_types_dict()
    return pd.DataFrame({c: _as_type(rows[c], types[c].name, source) for c in expected}), notes


def _missing(column: str, extra: list[str]) -> str:
    near = difflib.get_close_matches(column, extra, n=1, cutoff=0.6)
    return f"column {column!r} is missing" + (f" (found {near[0]!r}: a misspelling?)" if near else "")


def _as_type(values: pd.Series, kind: str, source: str) -> pd.Series:
    """float64 for `double`, else strings (missing stays missing, on every pandas); words where numbers belong are refused."""
    if kind == "double":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            raise DataError(f"{source}: column {values.name!r} must be numeric; row {int(np.argmax(bad.to_numpy())) + 1} "
                            f"holds {values[bad].iloc[0]!r}")
        return numbers.astype(np.float64)
    if kind == "boolean":
        return values.astype(object).where(values.notna(), None)
    return as_strings(values)


def _conform_array(rows: pd.DataFrame, spec, source: str) -> np.ndarray:
    width = spec.shape[1]
    if rows.shape[1] != width:
        raise DataError(f"{source}: the model takes {width} value columns (each array flattened in C order); "
                        f"the file has {rows.shape[1]}")
    try:
        return rows.to_numpy(dtype=np.float64).astype(spec.type)
    except ValueError:
        raise DataError(f"{source}: every column must be numeric for this model (flattened pixels or values)") from None


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Written beside `path` and renamed, so an interrupted write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(partial, index=False)
        else:
            frame.to_parquet(partial, index=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
