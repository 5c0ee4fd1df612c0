"""`tuner predict`: score a CSV or Parquet file with an exported model, after checking its columns.

The columns are checked against the model's signature before the model (and TensorFlow) loads, so
a missing or misspelled column costs a second, not a model load: one line names it and the close
match. Numbers are sent as float64 and categoricals as strings, the types the signature declares.

The export is read without MLflow: the signature, the blend artifact's path and the `model_config`
come from the `MLmodel` file (YAML), and the blend folder loads as a `FittedEnsemble` with the
installed tuner, members in their own formats. Importing MLflow and its load-time checks cost
seconds per call; the predictions are those of `mlflow.pyfunc.load_model(export).predict`, which
runs the same `predict_rows` (tuner/serve/pyfunc_model.py) after MLflow's own schema check.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.data.preprocess import as_strings
from tuner.data.sources import _read_table
from tuner.core.errors import DataError, TunerError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
ARTIFACT = "ensemble"  # the blend folder's key in the pyfunc flavour's artifacts (tuner/serve/export.py)


@dataclass
class Predictions:
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # columns the model learns nothing from in these rows


@dataclass(frozen=True)
class InputSchema:
    """The signature's inputs: named columns and their MLflow types, or one flattened tensor."""

    columns: dict[str, str] = field(default_factory=dict)  # name -> "double" / "string" / "boolean" ...
    tensor: tuple[np.dtype, int] | None = None  # (dtype, values per row)

    @classmethod
    def parse(cls, specs: list[dict[str, Any]]) -> InputSchema:
        """From MLflow's JSON form of a schema (`MLmodel`'s `signature.inputs`, `Schema.to_dict()`)."""
        if specs and specs[0].get("type") == "tensor":
            tensor = specs[0]["tensor-spec"]
            return cls(tensor=(np.dtype(tensor["dtype"]), int(tensor["shape"][1])))
        return cls(columns={spec["name"]: spec["type"] for spec in specs})


@dataclass(frozen=True)
class Export:
    """What `MLmodel` says about an export: the input schema, the blend folder, the model_config."""

    schema: InputSchema
    blend_folder: Path
    config: dict[str, Any] | None


def predict_file(model_dir: str | Path, data: str | Path, output: str | Path | None = None) -> Predictions:
    """Predictions for every row of `data`, written to `output` (.csv or .parquet) when given."""
    model_dir, data = Path(model_dir), Path(data)
    export = read_export(model_dir)
    if output is not None and Path(output).suffix.lower() not in TABLE_SUFFIXES:
        raise TunerError(f"-o {output}: write predictions to a .csv or .parquet file")
    if output is not None and Path(output).resolve() == data.resolve():
        raise TunerError(f"-o {output} is the input file; write the predictions to another file")
    rows = read_rows(data)
    model_input, notes = conform(rows, export.schema, data.name)
    ensemble = load_ensemble(export)
    frame = predict_rows(ensemble, model_input)
    if output is not None:
        write_table(frame, Path(output))
    return Predictions(frame, notes, unlearned_columns(ensemble, model_input))


def unlearned_columns(ensemble, model_input) -> list[str]:
    """A line per column whose every row is empty or a level training never saw: its predictions
    rest on the training fill-in for it, which a user should hear about (tuner.data.preprocess)."""
    check = getattr(ensemble.preprocessor, "unlearned_columns", None)
    return check(model_input) if check is not None and isinstance(model_input, pd.DataFrame) else []


def read_export(model_dir: Path) -> Export:
    """The export's signature, blend folder and model_config, read from MLmodel without loading the model."""
    import yaml

    if not (model_dir / "MLmodel").is_file():
        raise TunerError(f"{model_dir} is not an exported model (no MLmodel file); run `tuner export NAME` first")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    description = yaml.load((model_dir / "MLmodel").read_text(), Loader=loader) or {}
    inputs = (description.get("signature") or {}).get("inputs")
    if not inputs:
        raise TunerError(f"{model_dir} has no input signature, so its columns cannot be checked; re-export it")
    flavor = (description.get("flavors") or {}).get("python_function") or {}
    artifact = (flavor.get("artifacts") or {}).get(ARTIFACT)
    if artifact is None:
        raise TunerError(f"{model_dir} is an MLflow model but not a tuner export (no {ARTIFACT!r} artifact)")
    return Export(InputSchema.parse(json.loads(inputs)), model_dir / artifact["path"], flavor.get("config"))


def load_ensemble(export: Export):
    """The blend, checked against the export's model_config, as `mlflow.pyfunc.load_model` checks it."""
    ensemble = load_blend(export.blend_folder)
    check_config(export.config, ensemble)
    return ensemble


def load_blend(folder: Path):
    """The export's blend folder as a FittedEnsemble; a file changed since the export is one line naming it."""
    from tuner.core.safe_files import ChangedFileError
    from tuner.ensemble import FittedEnsemble

    try:
        return FittedEnsemble.load(folder)
    except ChangedFileError as changed:
        shown = Path(folder.parent.name, folder.name, changed.name).as_posix()
        raise TunerError(f"file {shown} of this export {'is missing' if changed.missing else 'changed'} "
                         "since it was exported; export it again") from None


def predict_rows(ensemble, model_input: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """What the exported model returns for rows in its signature's types (tuner/serve/pyfunc_model.py calls this too)."""
    frame = ensemble.predict_frame(raw_rows(ensemble, model_input))
    return frame.infer_objects()  # labels as int / str columns, not object


def check_config(config: dict | None, ensemble) -> None:
    """Refuse a `model_config` that disagrees with the blend artifact (edited MLmodel, override at load).

    Exports made before tuner wrote a `model_config` carry none and load unchecked.
    """
    if not config:
        return
    actual = ensemble.serving_config()
    wrong = [key for key in sorted(set(config) | set(actual)) if config.get(key) != actual.get(key)]
    if wrong:
        raise TunerError(f"model_config disagrees with the blend artifact {ensemble.name!r} on {', '.join(wrong)}: "
                         "it describes the artifact and cannot change it; load without model_config, or re-export")


def raw_rows(ensemble, model_input) -> pd.DataFrame | np.ndarray:
    """What the ensemble's preprocessor takes: the training columns, or arrays of the training shape."""
    example = ensemble.example
    if isinstance(example, pd.DataFrame):
        return model_input[list(example.columns)]
    values = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
    return values.reshape(len(values), *example.shape[1:]).astype(example.dtype)


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
    """The rows as the signature takes them; one-line errors for missing, misspelled or mistyped columns.

    `schema`: an InputSchema, or an MLflow Schema (what `tuner.serve.export.signature(...).inputs` gives)."""
    if not isinstance(schema, InputSchema):
        schema = InputSchema.parse(schema.to_dict())
    if schema.tensor is not None:
        return _conform_array(rows, *schema.tensor, source), []
    expected = list(schema.columns)
    present = [str(c) for c in rows.columns]
    rows = rows.set_axis(present, axis=1)
    missing = [c for c in expected if c not in present]
    extra = [c for c in present if c not in expected]
    if missing:
        raise DataError(f"{source}: " + "; ".join(_missing(c, extra) for c in missing)
                        + f" (the model takes {', '.join(expected)})")
    notes = [f"ignored {len(extra)} column(s) the model does not take: {', '.join(extra)}"] if extra else []
    return pd.DataFrame({c: _as_type(rows[c], schema.columns[c], source) for c in expected}), notes


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
        infinite = np.isinf(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
        if infinite.any():
            raise DataError(f"{source}: column {values.name!r} holds infinite values (row {int(np.argmax(infinite)) + 1}); "
                            "replace them or leave them blank")
        return numbers.astype(np.float64)
    if kind == "boolean":
        return values.astype(object).where(values.notna(), None)
    return as_strings(values)


def _conform_array(rows: pd.DataFrame, dtype: np.dtype, width: int, source: str) -> np.ndarray:
    if rows.shape[1] != width:
        raise DataError(f"{source}: the model takes {width} value columns (each array flattened in C order); "
                        f"the file has {rows.shape[1]}")
    try:
        return rows.to_numpy(dtype=np.float64).astype(dtype)
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
