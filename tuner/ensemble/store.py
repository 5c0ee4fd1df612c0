"""Where `tuner ensemble build` leaves its blends for `tuner export`: `ensembles/.built/NAME/`.

`build.json` says which blends were built, their out-of-fold and test scores and which one was
chosen (by out-of-fold score, never by test score); each blend is a `FittedEnsemble` folder beside
it. A build is written to a temporary folder and renamed, so a failed build leaves the last one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from tuner.core.errors import TunerError

BUILD_RECORD = "build.json"


def ensembles_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("TUNER_ENSEMBLES") or "ensembles")


def built_dir(name: str, root: str | Path | None = None) -> Path:
    return ensembles_root(root) / ".built" / name


def write_build(name: str, record: dict[str, Any], write_blends: Callable[[Path], None],
                root: str | Path | None = None) -> Path:
    """`write_blends(folder)` saves each blend as `folder/<blend>`; the record lands as build.json."""
    final = built_dir(name, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        write_blends(staging)
        (staging / BUILD_RECORD).write_text(json.dumps(record, indent=2, default=str))
        earlier = swap_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)
    return final


def swap_folder(staging: Path, final: Path) -> Path | None:
    """Rename `staging` to `final`. A folder already at `final` moves aside and is returned, for the
    caller to delete once nothing can fail any more; if the rename fails it is put back."""
    if not final.exists():
        staging.rename(final)
        return None
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
    old.rmdir()
    final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        old.rename(final)
        raise
    return old


def read_build(name: str, root: str | Path | None = None) -> dict[str, Any]:
    path = built_dir(name, root) / BUILD_RECORD
    if not path.is_file():
        raise TunerError(f"no built ensemble named {name!r} under {ensembles_root(root)}; "
                         f"run `tuner ensemble build {name} --from STUDY` first")
    return json.loads(path.read_text())
