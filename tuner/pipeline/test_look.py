"""`run-all`'s one look at the sealed test rows: the finalists and every member and blend of the
ensemble chosen out of fold, scored together and counted once on the study.

`tuner study finalize` and `tuner ensemble build` each count a look of their own; run-all takes one
for both records, the finalize report (study attributes, MLflow run `finalize`) and the build
record (`ensembles/.built/NAME`, MLflow run `ensemble/NAME`). The finalists are predicted before
the look is counted, so a failing refit costs nothing; a failure after it says the look stays
counted. A rerun shows both records (`stored_look`) or, when a look was counted and they are
missing (a run-all stopped after its look), refuses without `--force` rather than look again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from optuna.trial import FrozenTrial, TrialState

from tuner.core.errors import TunerError
from tuner.ensemble.judge import ChosenBuild, record_build
from tuner.ensemble.store import read_build
from tuner.evaluate.finalize import FinalizeReport, predict_test, record_finalize, score_predictions
from tuner.study.catalog import count_test_look
from tuner.study.sealed import ATTR
from tuner.study.storage import load_existing


@dataclass
class StoredLook:
    """What an earlier look left for the study's trials: the finalize report and the build record."""

    finalize: FinalizeReport
    build: dict[str, Any]


class LookedWithoutRecords(TunerError):
    """A look was counted but its records are missing or stale: another look needs --force."""


def look_once(build: ChosenBuild, finalists: list[FrozenTrial], root: str | Path | None,
              on_step: Callable[[str], None]) -> tuple[FinalizeReport, dict[str, Any]]:
    """Score `finalists` and the chosen build's members and blends on the test rows in one counted
    look; store and log both records. Returns the finalize report and the build record."""
    [sealed] = build.sources
    name = sealed.config.name
    predicted = predict_test(sealed, finalists)
    on_step(f"test look: {len(finalists)} finalist(s) and every member and blend scored once on the sealed test split")
    look = count_test_look(sealed.study, f"run-all {build.name}")
    try:
        report = record_finalize(sealed, score_predictions(sealed, predicted), look, build.tracker)
        return report, record_build(build, {name: look}, root)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TunerError(f"run-all failed after test look {look} of study {name!r} was counted ({reason}); "
                         "the look stays counted: fix the cause and rerun with --force") from exc


def stored_look(name: str, storage_url: str | None, root: str | Path | None) -> StoredLook:
    """The records of the study's last look when they match its trials and split; else
    `LookedWithoutRecords`, one line saying what is missing."""
    study = load_existing(name, storage_url)
    attrs = study.user_attrs
    stored = attrs.get(ATTR + "finalize")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    build: dict[str, Any] | None = None
    try:
        build = read_build(name, root)
    except TunerError:
        pass
    if not stored:
        missing = "its finalize report is missing"
    elif stored.get("trials_complete") != complete:
        missing = f"its finalize report covers {stored.get('trials_complete')} complete trials, not today's {complete}"
    elif build is None:
        missing = f"its ensemble build record is missing (`{name}` under the ensembles root)"
    elif build.get("split_digest") != attrs[ATTR + "split"]["digest"]:
        missing = "its ensemble build record is of another split"
    else:
        return StoredLook(FinalizeReport.from_record(stored), build)
    lookers = attrs.get(ATTR + "test_lookers", [])
    raise LookedWithoutRecords(
        f"study {name!r} was already scored on its test split ({attrs.get(ATTR + 'test_looks', 0)} counted look(s), "
        f"the last by {lookers[-1] if lookers else '?'!r}) but {missing} (a run-all stopped after its look?); "
        "looking again is counted: rerun with --force")
