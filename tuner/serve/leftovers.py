"""What an export stopped by `kill -9` leaves, and its removal by the next export of the same name.

An export writes into hidden folders beside its destination, named with its process id
(`.NAME-export-PID-XXXX`, `.NAME-refit-PID-XXXX`; `.NAME-old-XXXX` holds the earlier export while
the new one is renamed into place), and registers its MLflow version marked pending with its
staging folder's name until that folder is in place. A process killed on the way runs no cleanup,
so the next export of NAME removes staging folders whose process is gone, puts back an earlier
export left aside when no export took its place, and takes back pending versions whose export is
gone (the alias `champion` returns to the version the export folder holds). Folders of an export
still running (its process alive on this machine) are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("tuner")
STAGING_KINDS = ("export", "refit")


def staging_prefix(final: Path, kind: str) -> str:
    """The hidden folder name's start for this process (`tempfile.mkdtemp(prefix=...)` adds the rest)."""
    return f".{final.name}-{kind}-{os.getpid()}-"


def clear_leftovers(final: Path, tracker: Any, name: str, manifest_name: str) -> str | None:
    """Remove what killed exports to `final` (registered as `name`) left; one line saying what, or None."""
    folders, restored = _clear_folders(final)
    versions = _clear_versions(final, tracker, name, manifest_name)
    said = [f"{len(folders)} staging folder(s) ({', '.join(folders)})"] if folders else []
    said += [f"registry version(s) {', '.join(versions)} of {name!r} with no model folder"] if versions else []
    line = "removed what a stopped export left: " + " and ".join(said) if said else None
    if restored:
        back = f"put the earlier export back in {final} from {restored}"
        line = f"{line}; {back}" if line else f"a stopped export left the earlier one aside: {back}"
    return line


def _clear_folders(final: Path) -> tuple[list[str], str | None]:
    """Staging folders of dead exports removed, and the earlier export put back when nothing took its place."""
    if not final.parent.is_dir():
        return [], None
    pattern = re.compile(rf"^\.{re.escape(final.name)}-(?:{'|'.join(STAGING_KINDS)})-(\d+)-")
    removed, restored = [], None
    for folder in sorted(final.parent.iterdir()):
        match = pattern.match(folder.name)
        if match and folder.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    earlier = sorted((f for f in final.parent.glob(f".{final.name}-old-*") if f.is_dir()), key=lambda f: f.stat().st_mtime)
    if earlier and not final.exists():  # killed between moving the earlier export aside and renaming the new one in
        restored = earlier.pop()
        restored.rename(final)
    for folder in earlier:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed, None if restored is None else restored.name


def _clear_versions(final: Path, tracker: Any, name: str, manifest_name: str) -> list[str]:
    """Pending versions whose staging folder is gone, except the one the export folder holds (settled here)."""
    held = _held_version(final / manifest_name)
    removed = []
    for version, staging in sorted(tracker.pending_versions(name).items(), key=lambda item: int(item[0])):
        if (final.parent / staging).exists():
            continue  # its export is still running
        if version == held:
            tracker.settle_model(name, version)
            continue
        tracker.drop_unfinished(name, version, held)
        removed.append(version)
    return removed


def _held_version(manifest: Path) -> str | None:
    try:
        version = json.loads(manifest.read_text()).get("mlflow", {}).get("version")
    except (OSError, ValueError):
        return None
    return None if version is None else str(version)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (an export on another machine sharing the folder is not seen)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
