"""`tuner export`: a built blend as an MLflow pyfunc model folder, logged and registered in MLflow.

The model is saved "from code" (`tuner/serve/pyfunc_model.py`), with the blend folder (members in their own
formats, the fitted preprocessor) as its one artifact and a copy of the `tuner` package as
`code_paths`, so it loads in any process that has the pinned requirements, whether or not tuner is
installed there. The signature declares the raw training columns (numbers `double`, categoricals and
text `string`; missing values allowed in every column) or, for arrays, one flattened tensor.

By default the blend's members are first trained again on every row, the sealed test rows
included (`tuner.serve.refit`); `refit="none"` exports the blend exactly as the build scored it.
The manifest's `trained_on` says which rows trained the exported model.

Atomic: everything is written to a hidden folder beside the destination and renamed into place
last; any failure, Ctrl-C included, removes it, keeps an earlier export and takes back what was
logged or registered in MLflow. A process killed on the way cleans nothing, so each export first
removes what a killed export of the same name left (`tuner.serve.leftovers`) and says so.

Nothing in the model folder's artifacts is a pickle (`tuner.ensemble.fitted`), and its
`checksums.json` is checked before the blend loads.
"""

from __future__ import annotations

import difflib
import json
import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from tuner.ensemble import FittedEnsemble, WeightedAverage
from tuner.core.safe_files import ChangedFileError
from tuner.ensemble.fitted import DESCRIPTION
from tuner.ensemble.store import built_dir, ensembles_root, read_build, swap_folder
from tuner.core.errors import TunerError
from tuner.serve.predict import ARTIFACT  # the blend folder's name in context.artifacts (tuner/serve/pyfunc_model.py)
from tuner.serve.leftovers import clear_leftovers, staging_prefix
from tuner.serve.refit import REFIT_MODES, as_scored, refit_on_every_row, refit_refusal
from tuner.tracking import CHAMPION, PublishedModel, Tracker

MANIFEST = "manifest.json"
SERVING_CODE = Path(__file__).with_name("pyfunc_model.py")
log = logging.getLogger("tuner")
VERSIONED = ("tuner", "mlflow", "tensorflow", "keras", "xgboost", "lightgbm", "catboost", "scikit-learn", "skops", "numpy",
             "pandas")


@dataclass
class ExportResult:
    folder: Path
    blend: str
    manifest: dict[str, Any]
    published: PublishedModel
    cleaned: str | None = None  # what a killed earlier export left and this one removed


def export_ensemble(name: str, blend: str | None = None, out: str | Path | None = None,
                    tracking_uri: str | None = None, root: str | Path | None = None, refit: str = "bag",
                    storage_url: str | None = None, on_step: Callable[[str], None] = lambda message: None,
                    skipped_refit: str | None = None) -> ExportResult:
    """Export blend `blend` (default: the build's chosen one) of the built ensemble `name`, its
    members trained again on every row (`refit` `bag` or `single`, reading the studies in
    `storage_url`) or as scored (`none`; `skipped_refit` says why, when the caller chose it for time)."""
    if refit not in REFIT_MODES:
        raise TunerError(f"refit must be one of {', '.join(REFIT_MODES)}, got {refit!r}")
    build = read_build(name, root)
    blend = choose_blend(build, blend)
    record = build["blends"][blend]
    blend_folder = built_dir(name, root) / record.get("folder", blend)
    if not (blend_folder / DESCRIPTION).is_file():
        raise TunerError(f"blend {blend!r} of {name!r} is missing from {blend_folder}; "
                         f"run `tuner ensemble build {name}` again")
    final = Path(out) if out else ensembles_root(root) / name
    _check_destination(final)
    tracker = Tracker(tracking_uri)
    tracker.check()
    cleaned = clear_leftovers(final, tracker, name, MANIFEST)
    if cleaned:
        log.warning(cleaned)
        on_step(cleaned)
    try:
        ensemble = FittedEnsemble.load(blend_folder)
    except ChangedFileError as changed:
        raise TunerError(f"file {changed.name} of blend {blend!r} of {name!r} changed since the build wrote it; "
                         f"run `tuner ensemble build {name}` again") from None
    refused = None if refit == "none" else refit_refusal(ensemble)
    trained_on = as_scored(build, skipped_refit or (refused and f"{refused}; exported as scored"))

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(final, "export"), dir=final.parent))
    refitted = None  # the refitted blend's folder, beside staging until the model holds a copy
    try:
        if refit != "none" and refused is None:
            ensemble, trained_on = refit_on_every_row(ensemble, build, refit, storage_url, on_step)
            refitted = Path(tempfile.mkdtemp(prefix=staging_prefix(final, "refit"), dir=final.parent))
            blend_folder = ensemble.save(refitted / blend)
        save_model(ensemble, blend_folder, staging)
        manifest = make_manifest(build, blend, ensemble, trained_on)
        _write_json(staging / MANIFEST, manifest)
        published = tracker.publish_model(
            staging, name, build.get("tracking_run_id"), build["studies"][0], f"export/{name}",
            {"tuner.ensemble": name, "tuner.blend": blend, "fingerprint": str(build.get("fingerprint")),
             "tuner.trained_on": trained_on["description"]},
            manifest["scores"], pending=staging.name)
        try:
            manifest["mlflow"] = {"tracking_uri": tracker.uri, "run_id": published.run_id,
                                  "model_id": published.model_id, "registered_model": published.name,
                                  "version": published.version, "alias": CHAMPION, "model_uri": published.uri}
            _write_json(staging / MANIFEST, manifest)
            earlier = swap_folder(staging, final)
        except BaseException:
            tracker.retract_model(published)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if refitted is not None:
            shutil.rmtree(refitted, ignore_errors=True)
    tracker.settle_model(published.name, published.version)
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)
    return ExportResult(final, blend, manifest, published, cleaned)


def choose_blend(build: dict[str, Any], blend: str | None) -> str:
    blend = blend or build["chosen"]
    if blend not in build["blends"]:
        near = difflib.get_close_matches(blend, list(build["blends"]), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise TunerError(f"ensemble {build['name']!r} has no blend {blend!r}; {hint}"
                         f"built blends: {', '.join(build['blends'])}")
    return blend


def save_model(ensemble: FittedEnsemble, blend_folder: Path, folder: Path) -> None:
    """The pyfunc model in `folder` (empty): code, blend artifact, signature, example, requirements, and
    a `model_config` (blend kind, members, weights, input columns) that loading checks against the artifact."""
    import mlflow.pyfunc

    import tuner

    with tempfile.TemporaryDirectory(prefix="tuner-code-") as code:
        package = Path(code) / "tuner"
        shutil.copytree(Path(tuner.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
        mlflow.pyfunc.save_model(
            str(folder), python_model=str(SERVING_CODE), artifacts={ARTIFACT: str(blend_folder)},
            code_paths=[str(package)], signature=signature(ensemble), input_example=input_example(ensemble),
            pip_requirements=pinned_requirements(), model_config=ensemble.serving_config())


def signature(ensemble: FittedEnsemble):
    """Raw columns in (numbers `double`: pandas and JSON give float64), `prediction` + `proba_*` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = ensemble.example
    if example is None:
        raise TunerError(f"blend {ensemble.name!r} carries no example rows; rebuild it with `tuner ensemble build`")
    if isinstance(example, pd.DataFrame):
        numeric = set(ensemble.preprocessor.numeric_)
        inputs = Schema([ColSpec("double" if column in numeric
                                 else "boolean" if pd.api.types.is_bool_dtype(example[column]) else "string", column)
                         for column in example.columns])
    else:
        inputs = Schema([TensorSpec(np.dtype(_flat_dtype(example)), (-1, int(np.prod(example.shape[1:]))))])
    if ensemble.classes is None:
        return ModelSignature(inputs, Schema([ColSpec("double", "prediction")]))
    outputs = [ColSpec(_label_type(ensemble.classes), "prediction")]
    outputs += [ColSpec("double", f"proba_{label}") for label in ensemble.classes]
    return ModelSignature(inputs, Schema(outputs))


def input_example(ensemble: FittedEnsemble) -> pd.DataFrame | np.ndarray:
    """The ensemble's example rows as the signature takes them (numbers as float64, arrays flattened)."""
    example = ensemble.example
    if isinstance(example, pd.DataFrame):
        return example.astype({c: np.float64 for c in ensemble.preprocessor.numeric_})
    return example.reshape(len(example), -1).astype(_flat_dtype(example))


def _flat_dtype(example: np.ndarray) -> str:
    return "int64" if example.dtype.kind in "iu" else "float64"


def _label_type(classes: list[Any]) -> str:
    if all(isinstance(c, (bool, np.bool_)) for c in classes):
        return "boolean"
    if all(isinstance(c, (int, np.integer)) for c in classes):
        return "long"
    if all(isinstance(c, (float, np.floating)) for c in classes):
        return "double"
    return "string"


def pinned_requirements() -> list[str]:
    """tuner's own dependencies at the versions installed here (the model runs tuner's code)."""
    from packaging.requirements import Requirement

    try:
        declared = metadata.requires("tuner") or []
    except metadata.PackageNotFoundError:
        raise TunerError("tuner is not installed as a package, so its dependencies cannot be pinned; "
                         "run `pip install -e .` in the repository") from None
    pinned = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra (tests)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pinned.append(f"{requirement.name}{extras}=={metadata.version(requirement.name)}")
    return pinned


def make_manifest(build: dict[str, Any], blend: str, ensemble: FittedEnsemble,
                  trained_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """What was exported and how good it is: members, weights, which rows trained them, data
    identity, scores by split (those of the blend as scored), versions."""
    metric = build["metric"]
    blend_record = build["blends"][blend]
    weights = blend_record.get("weights")
    if weights is None and isinstance(ensemble.combiner, WeightedAverage):
        weights = ensemble.combiner.weights.tolist()
    recorded = {(m["study"], m["trial"]): m for m in build.get("members", [])}
    members = []
    for index, fitted in enumerate(ensemble.members):
        member = {k: fitted.record()[k] for k in ("study", "trial", "family", "params", "steps")}
        if isinstance(weights, list) and len(weights) == len(ensemble.members):
            member["weight"] = weights[index]
        member["scores"] = _split_scores(recorded.get((fitted.study, fitted.trial), {}), metric)
        members.append(member)
    return {
        "name": build["name"], "blend": blend, "chosen_blend": build["chosen"], "best_single": build.get("best_single"),
        "task": build["task"], "metric": metric, "direction": build.get("direction"), "classes": ensemble.classes,
        "combiner": ensemble.combiner.kind, "weights": weights, "members": members,
        "trained_on": trained_on or as_scored(build),
        "scores": {**ensemble.scores, **_split_scores(blend_record, metric)},
        "studies": build["studies"], "fingerprint": build.get("fingerprint", ensemble.fingerprint),
        "split_digest": build.get("split_digest", ensemble.split_digest),
        "inputs": _inputs_note(ensemble), "versions": versions(),
        "built_at": build.get("built_at"), "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_tracking_run_id": build.get("tracking_run_id"),
    }


def _split_scores(record: dict[str, Any], metric: str) -> dict[str, float]:
    """`{"oof": 0.93, "test": 0.91}` -> `{"oof_roc_auc": 0.93, "test_roc_auc": 0.91}` (every number names its split)."""
    return {f"{split}_{metric}": float(record[split]) for split in ("val", "cv", "oof", "test", "holdout")
            if isinstance(record.get(split), (int, float))}


def _inputs_note(ensemble: FittedEnsemble) -> dict[str, Any]:
    example = ensemble.example
    if isinstance(example, pd.DataFrame):
        return {"kind": "table", "columns": list(map(str, example.columns))}
    return {"kind": "array", "shape": list(example.shape[1:]), "flattened": int(np.prod(example.shape[1:])),
            "dtype": _flat_dtype(example)}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _check_destination(final: Path) -> None:
    """Refuse to replace a folder that is not an earlier export (a typo in --out must not delete data)."""
    if final.exists() and not (final / MANIFEST).is_file():
        if final.is_dir() and not any(final.iterdir()):
            return
        raise TunerError(f"{final} exists and is not a tuner export (no {MANIFEST}); choose another --out")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
