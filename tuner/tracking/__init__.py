"""Everything tuner writes to MLflow: one experiment and parent run per study, a child run per trial.

Only this package talks to MLflow, one job a module:

- `server`: the tracking URI, a local store's artifact root, the `tuner server` command;
- `client`: the shared `MlflowClient`, experiments, artifacts, and how failures are reported;
- `runs`: the study's parent run, the trials' child runs, the finalize and ensemble runs;
- `registry`: publishing an exported model and moving its `champion` alias.

`Tracker` is all of them on one client: what every command creates and passes around.
"""

from __future__ import annotations

from tuner.tracking.registry import CHAMPION, ModelRegistry, PublishedModel
from tuner.tracking.runs import DESCRIPTION, StudyRuns
from tuner.tracking.server import (
    DEFAULT_TRACKING_URI, LOCAL_AND_PRIVATE_HOSTS, WILDCARD_ADDRESSES, allowed_hosts, artifact_root_for, check_server,
    child_environment, resolve_tracking_uri, server_command,
)


class Tracker(StudyRuns, ModelRegistry):
    """One MLflow client for a command: study and trial runs (StudyRuns) and the model registry (ModelRegistry)."""


__all__ = ["CHAMPION", "DEFAULT_TRACKING_URI", "DESCRIPTION", "LOCAL_AND_PRIVATE_HOSTS", "PublishedModel",
           "Tracker", "WILDCARD_ADDRESSES", "allowed_hosts", "artifact_root_for", "check_server", "child_environment",
           "resolve_tracking_uri", "server_command"]
