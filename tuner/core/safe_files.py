"""Files that load without running code, and a record of their contents that loading checks first.

A blend leaves the machine (an export is handed to other people and to servers), so nothing in it
is a pickle: scikit-learn estimators and the fitted preprocessing are written with `skops.io`, whose
loader builds only the types it is told to trust (`TRUSTED_TYPES` beside skops' own list of
scikit-learn and numpy types) and refuses any other before creating anything; arrays are `.npy`
read with `allow_pickle=False`. `checksums.json` holds the sha256 of every file of a folder,
written last and checked before anything in the folder is read: it tells a file changed by
accident or by a careless copy, it does not tell who wrote the folder.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from tuner.core.errors import TunerError

CHECKSUMS = "checksums.json"
SKOPS_SUFFIX = ".skops"
# Types the blends' scikit-learn objects hold beyond those skops trusts by default; each only
# stores fitted state (no type here runs code when it is built)
TRUSTED_TYPES = [
    "tuner.data.preprocess.FeaturePreprocessor",  # fitted state only: its methods are this package's
    "numpy.dtype",
    "sklearn.tree._tree.Tree",  # random forest trees
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "functools.partial", "sklearn.utils.validation.check_array",  # HistGradientBoosting's categorical check
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",  # k-nearest neighbours
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
]


class ChangedFileError(TunerError):
    """A file of a saved folder differs from what was written there, or is missing."""

    def __init__(self, folder: Path, name: str, missing: bool = False) -> None:
        self.folder, self.name, self.missing = folder, name, missing
        super().__init__(f"file {name} of {folder} {'is missing' if missing else 'changed since it was written'}")


def save_estimator(estimator: Any, path: Path) -> Path:
    """A scikit-learn object (or the fitted preprocessing) as a skops file at `path` (suffix `.skops`)."""
    import skops.io

    path = Path(path).with_suffix(SKOPS_SUFFIX)
    skops.io.dump(estimator, path)
    return path


def load_estimator(path: Path) -> Any:
    """What `save_estimator` wrote; a file holding any type outside the trusted ones, or not a skops
    file at all (a pickle), is refused in one line before anything in it is built (skops audits the
    whole file against `TRUSTED_TYPES` first)."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    path = Path(path).with_suffix(SKOPS_SUFFIX)
    try:
        return skops.io.load(path, trusted=TRUSTED_TYPES)
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError):
        raise TunerError(f"{path} is not a skops file (a pickle, or damaged); it was not loaded") from None
    except UntrustedTypesFoundException:
        untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        raise TunerError(f"{path} holds types tuner does not trust ({', '.join(sorted(untrusted))}); "
                         "it was not loaded") from None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by path relative to it, into `folder/checksums.json`."""
    folder = Path(folder)
    sums = {path.relative_to(folder).as_posix(): file_digest(path)
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CHECKSUMS}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))
    return sums


def verify_checksums(folder: Path) -> None:
    """Raise ChangedFileError for the first file of `folder` that differs from `checksums.json`, or
    a TunerError when the folder has no checksums (written by a tuner that pickled its files)."""
    folder = Path(folder)
    record = folder / CHECKSUMS
    if not record.is_file():
        raise TunerError(f"{folder} has no {CHECKSUMS}: an earlier tuner wrote it, with pickled files that could "
                         "run code when loaded, so it is not loaded; build or export it again")
    for name, expected in json.loads(record.read_text()).items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise TunerError(f"{record} names a file outside {folder} ({name}); it is not loaded")
        if not path.is_file():
            raise ChangedFileError(folder, name, missing=True)
        if file_digest(path) != expected:
            raise ChangedFileError(folder, name)
