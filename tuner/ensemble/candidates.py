"""Candidate members for an ensemble: the best few complete trials of each family of each study.

Studies are only blended when they share the data and the sealed split: members trained or
scored on other rows would leak test rows into one another's training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import BEST_STEP_ATTR, FAMILY_ATTR, PARAMS_ATTR
from tuner.core.errors import SplitMismatchError, TunerError
from tuner.core.metrics import METRICS, direction_sign
from tuner.study.sealed import SealedStudy, open_sealed


@dataclass
class Candidate:
    """One complete trial that may join the ensemble; refitted from its params and step count."""

    source: SealedStudy
    trial: FrozenTrial

    @property
    def study(self) -> str:
        return self.source.config.name

    @property
    def family(self) -> str:
        return self.trial.user_attrs[FAMILY_ATTR]

    @property
    def params(self) -> dict[str, Any]:
        return self.trial.user_attrs[PARAMS_ATTR]

    @property
    def steps(self) -> int | None:
        return self.trial.user_attrs.get(BEST_STEP_ATTR)

    @property
    def label(self) -> str:
        return f"{self.study}#{self.trial.number} {self.family}"


def open_sources(names: list[str], storage_url: str | None = None) -> list[SealedStudy]:
    """The studies, re-read and verified; refused unless they share task, data and split."""
    if not names:
        raise TunerError("name at least one study to build from: --from STUDY")
    if len(set(names)) != len(names):
        raise TunerError(f"a study is named twice in --from ({', '.join(names)}); name each once")
    sources = [open_sealed(name, storage_url) for name in names]
    first = sources[0]
    for other in sources:
        if other.metric not in METRICS:
            raise TunerError(f"study {other.config.name!r} is scored by the custom monitor {other.metric!r}, which "
                             "cannot score blends; ensembles need a study `metric:`")
        if (other.split.fingerprint, other.split.digest) != (first.split.fingerprint, first.split.digest):
            raise SplitMismatchError(
                f"studies {first.config.name!r} and {other.config.name!r} do not share data and split "
                f"(fingerprint {first.split.fingerprint} vs {other.split.fingerprint}, split digest "
                f"{first.split.digest} vs {other.split.digest}); blend only studies with the same data and `split:`")
        if other.task != first.task:
            raise TunerError(f"studies {first.config.name!r} ({first.task}) and {other.config.name!r} "
                             f"({other.task}) have different tasks; blend studies of one task")
    return sources


def gather_candidates(sources: list[SealedStudy], per_family: int, families: set[str] | None = None) -> list[Candidate]:
    """The `per_family` best complete trials (by validation) of every family (or of `families`) of every study."""
    candidates = []
    for source in sources:
        study = source.study
        sign = direction_sign(study.direction)
        complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -sign * t.value)
        found = {t.user_attrs[FAMILY_ATTR] for t in complete}
        for family in sorted(found if families is None else found & families):
            candidates += [Candidate(source, t) for t in complete if t.user_attrs[FAMILY_ATTR] == family][:per_family]
    if not candidates:
        names = ", ".join(s.config.name for s in sources)
        raise TunerError(f"no complete trial in {names}; run `tuner study run` before building an ensemble")
    return candidates
