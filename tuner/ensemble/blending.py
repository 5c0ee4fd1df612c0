"""One way from out-of-fold predictions to blends, for every ensemble build.

A K-fold study reads its trials' stored out-of-fold predictions (`bagged_trials`); a holdout build
refits its candidates on K-1 folds (`build`, `oof`). Both hand the same `OutOfFold` record to
`blend_out_of_fold`, which makes every choice on it: Caruana's selection picks the members, the
average, weighted and stacked blends are scored cross-fitted over the record's folds, and the blend
to export is the best out of fold. Then the picked members are fitted (how is the build's own
business: bags, or refits on every search row) and each blend is wrapped for export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.preprocessing import LabelEncoder

from tuner.core.metrics import Metric
from tuner.data import Part, prepare_parts
from tuner.ensemble.blends import stacked_out_of_fold
from tuner.ensemble.candidates import Candidate
from tuner.ensemble.fitted import FittedEnsemble, FittedMember
from tuner.ensemble.judge import BLENDS, Blended, choose_blend, standard_blends
from tuner.ensemble.oof import FoldFit
from tuner.ensemble.selection import cross_fitted, greedy_selection, optimised_weights
from tuner.study.sealed import SealedStudy

EXAMPLE_ROWS = 5  # raw search rows saved with every blend: the export's input example
MemberFitter = Callable[[list[Candidate], Part, LabelEncoder | None], list[FittedMember]]


@dataclass
class OutOfFold:
    """Out-of-fold predictions of candidate members over the search rows: what every blend is chosen from.

    `predictions[i]` (rows, or rows x classes) is `candidates[i]`'s, each row predicted by fits that
    never saw it; candidates come best out-of-fold score first (`ranked`), so the first is the best
    single member. `folds` numbers each row's fold, over which blends are cross-fitted.
    """

    candidates: list[Candidate]
    predictions: np.ndarray  # candidates x rows (x classes)
    y: np.ndarray  # encoded targets of `rows`
    folds: np.ndarray
    rows: np.ndarray  # the search rows (dataset row numbers), never a test row
    task: str
    metric: Metric
    scores: list[float] = field(init=False)  # each candidate's out-of-fold score

    def __post_init__(self) -> None:
        self.scores = [self.metric.score(self.y, p) for p in self.predictions]

    @classmethod
    def ranked(cls, candidates: list[Candidate], predictions: Sequence[np.ndarray], y: np.ndarray, folds: np.ndarray,
               rows: np.ndarray, task: str, metric: Metric) -> OutOfFold:
        """The record with its candidates sorted best out of fold first (a tie keeps the given order)."""
        scores = [metric.score(y, p) for p in predictions]
        order = sorted(range(len(candidates)), key=lambda i: scores[i], reverse=metric.direction == "maximize")
        stack = np.stack([np.asarray(predictions[i], dtype=np.float64) for i in order])
        return cls([candidates[i] for i in order], stack, y, folds, rows, task, metric)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.candidates]

    @property
    def trials(self) -> list[int]:
        return [c.trial.number for c in self.candidates]

    @property
    def families(self) -> list[str]:
        return [c.family for c in self.candidates]

    def subset(self, keep: Sequence[int]) -> OutOfFold:
        """Only the candidates at `keep`, in that order."""
        return OutOfFold([self.candidates[i] for i in keep], self.predictions[list(keep)], self.y, self.folds,
                         self.rows, self.task, self.metric)


@dataclass
class Selection:
    """Caruana's greedy selection over every candidate: its weights, and the members it picked
    (those it weighs, and the best candidate always, so no blend chosen out of fold is below it)."""

    weights: np.ndarray
    picked: list[int]


def select_members(oof: OutOfFold) -> Selection:
    weights = greedy_selection(list(oof.predictions), oof.y, oof.metric)
    return Selection(weights, [i for i in range(len(oof.candidates)) if weights[i] > 0 or i == 0])


@dataclass
class TrainedBlend:
    """A blend trained as one model of its own (wide-and-deep): its out-of-fold predictions, and how
    to fit it on every search row."""

    name: str
    predictions: np.ndarray
    fit: Callable[[Part, LabelEncoder | None], FoldFit]


def blend_out_of_fold(source: SealedStudy, oof: OutOfFold, fit_members: MemberFitter, selection: Selection | None = None,
                      trained: Sequence[TrainedBlend] = ()) -> tuple[Blended, LabelEncoder | None, Any]:
    """Choose and fit the blends; returns them with the target encoder and the preprocessor fitted on
    every search row (the export's input contract).

    The average and stacked blends use the picked members; the weighted blend is Caruana's weights
    or SLSQP-optimised weights over the picked members, whichever scores better cross-fitted.
    `fit_members(picked candidates, all search rows, encoder)` fits the members; `selection`, when
    the build already ran it, saves running it again.
    """
    selection = selection or select_members(oof)
    metric, y, folds, task = oof.metric, oof.y, oof.folds, oof.task
    pool = [oof.predictions[i] for i in selection.picked]
    blend_oof = {
        "best_single": oof.predictions[0],
        "average": np.mean(pool, axis=0),
        "stacked": stacked_out_of_fold(pool, y, task, folds),
        **{blend.name: blend.predictions for blend in trained},
    }
    weighting, weights, blend_oof["weighted"] = _weighted(oof, selection, pool)
    oof_scores = {blend: metric.score(y, blend_oof[blend]) for blend in BLENDS if blend in blend_oof}

    full, _, preprocessor, encoder = prepare_parts(source.dataset, task, oof.rows, {})
    picked = [oof.candidates[i] for i in selection.picked]
    members = fit_members(picked, full, encoder)
    classes = None if encoder is None else list(encoder.classes_)

    def ensemble(blend: str, chosen: list[FittedMember], combiner) -> FittedEnsemble:
        return FittedEnsemble(blend, task, metric.name, classes, preprocessor, chosen, combiner,
                              source.dataset.fingerprint, source.split.digest, example=full.raw[:EXAMPLE_ROWS])

    ensembles = standard_blends(ensemble, members, weights, pool, y, task)
    for blend in trained:
        fitted = blend.fit(full, encoder)
        ensembles[blend.name] = ensemble(blend.name, fitted.members, fitted.combiner)
    rows = [member_row(oof.candidates[i], oof.scores[i]) for i in selection.picked]
    return (Blended(members, rows, weights, pool, ensembles, oof_scores, choose_blend(oof_scores, metric), weighting),
            encoder, preprocessor)


def _weighted(oof: OutOfFold, selection: Selection, pool: list[np.ndarray]) -> tuple[str, np.ndarray, np.ndarray]:
    """Caruana's weights (re-selected over every candidate in each fold) or SLSQP weights over the
    picked members, whichever scores better cross-fitted: the rule, the picked members' weights and
    the blend's out-of-fold predictions."""
    metric, y, folds, classification = oof.metric, oof.y, oof.folds, oof.task != "regression"
    caruana = cross_fitted(lambda p, t: greedy_selection(p, t, metric), list(oof.predictions), y, folds)
    optimised = cross_fitted(lambda p, t: optimised_weights(p, t, classification), pool, y, folds)
    if metric.better(metric.score(y, optimised), metric.score(y, caruana)):
        return "optimised weights (SLSQP)", optimised_weights(pool, y, classification), optimised
    return "greedy selection (Caruana)", selection.weights[selection.picked], caruana


def member_row(candidate: Candidate, oof_score: float) -> dict[str, Any]:
    """How the build record describes a member."""
    return {"label": candidate.label, "study": candidate.study, "trial": candidate.trial.number,
            "family": candidate.family, "params": candidate.params, "steps": candidate.steps,
            "val": candidate.trial.value, "oof": oof_score}
