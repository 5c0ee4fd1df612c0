"""Out-of-fold predictions: every non-test row predicted by fits that never saw it.

The train + validation rows are cut into K folds; for each fold the preprocessing and every
member are fitted on the other folds only (`prepare_parts`), with the member's fixed params and
the step count early stopping found, and predict the held-out fold. Blend weights and
meta-models learn from these predictions, never from in-sample ones and never from test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import LabelEncoder

from tuner.data import Dataset, Part, prepare_parts
from tuner.ensemble.fitted import Combiner, FittedMember
from tuner.core.errors import DataError
from tuner.core.metrics import renormalise
from tuner.models import FAMILIES, ProblemSpec

if TYPE_CHECKING:
    from tuner.ensemble.candidates import Candidate


@dataclass
class FoldFit:
    """Members fitted on one part, and optionally the combiner that turns their scores into one."""

    members: list[FittedMember]
    combiner: Combiner | None = None
    release_memory: Callable[[], None] = lambda: None  # the family's, called once the fold is predicted

    def predict(self, part: Part) -> np.ndarray:
        scores = [m.member.predict_scores(part.X(m.view)) for m in self.members]
        if self.combiner is None:
            return scores[0]
        views = {v: part.X(v) for v in {m.view for m in self.members} | self.combiner.views()}
        return self.combiner.combine(scores, self.members, views)


Fitter = Callable[[Part, LabelEncoder | None], FoldFit]


def member_spec(candidate: Candidate, fit: Part, encoder: LabelEncoder | None) -> ProblemSpec:
    """The candidate's study spec for these rows, held to the step count its trial kept."""
    spec = candidate.source.problem_spec(**ProblemSpec.data_fields(fit, encoder))
    if candidate.steps is not None:
        spec = replace(spec, max_epochs=candidate.steps, max_rounds=candidate.steps)
    return spec


def fit_candidate(candidate: Candidate, fit: Part, encoder: LabelEncoder | None) -> FittedMember:
    family = FAMILIES[candidate.family]
    spec = member_spec(candidate, fit, encoder)
    view = family.view_for(spec)
    member = family.fit_member(candidate.params, spec, candidate.trial.number, fit.X(view), fit.y)
    return FittedMember(candidate.study, candidate.trial.number, candidate.family, candidate.params,
                        candidate.steps, view, member)


def member_fitter(candidate: Candidate) -> Fitter:
    def fit(part: Part, encoder: LabelEncoder | None) -> FoldFit:
        return FoldFit([fit_candidate(candidate, part, encoder)],
                       release_memory=FAMILIES[candidate.family].release_memory)

    return fit


def fold_ids(y: np.ndarray, task: str, folds: int, seed: int) -> np.ndarray:
    """Fold number of each row (stratified for classification), deterministic in the split seed."""
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    if task != "regression":
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < folds:
            raise DataError(f"a class has only {counts.min()} train + validation row(s), fewer than --folds {folds}; "
                            "use fewer folds")
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    ids = np.empty(len(y), dtype=np.int64)
    for number, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y)):
        ids[held] = number
    return ids


def out_of_fold(dataset: Dataset, task: str, rows: np.ndarray, ids: np.ndarray,
                fitters: dict[str, Fitter]) -> dict[str, np.ndarray]:
    """Predictions for `rows` (dataset row numbers, never test rows) from fits on the other folds."""
    predictions: dict[str, np.ndarray] = {}
    for fold in np.unique(ids):
        held = ids == fold
        fit, parts, _, encoder = prepare_parts(dataset, task, rows[~held], {"oof": rows[held]})
        for name, fitter in fitters.items():
            fitted = fitter(fit, encoder)
            scores = renormalise(fitted.predict(parts["oof"]))
            fitted.release_memory()
            if name not in predictions:
                predictions[name] = np.full((len(rows), *scores.shape[1:]), np.nan)
            predictions[name][held] = scores
    return predictions
