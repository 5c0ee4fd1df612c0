"""Ensembles of a K-fold study from the search itself: selection over every trial's stored predictions.

Every complete trial of a K-fold study left its out-of-fold predictions and its fold models
(`tuner.study.trial_bags`). Here Caruana's ensemble selection with replacement runs over the out-of-fold
predictions of all of them (not of a pre-picked few); the optimised-weight, average and stacked
blends work on the members it picked; every blend is scored out of fold, cross-fitted over the
study's own folds, and the best is the one to export. A member is its trial's bag: the fold models
averaged, each behind its own fold's preprocessing, so nothing is refitted (a trial whose fold
models were let go is rebuilt from its params and per-fold step counts, and the build says so).

The jointly trained wide-and-deep blend needs a training pass of its own, so it is not built here;
`tuner ensemble build` of a holdout study builds it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from optuna.trial import TrialState

from tuner.study.trial_attrs import DURATION_ATTR, FAMILY_ATTR, PARAMS_ATTR
from tuner.study.trial_bags import TrialBags, artifact_root, assemble_bags, has_oof
from tuner.data.preprocess import encode_target, fit_target_encoder
from tuner.ensemble.blending import OutOfFold, blend_out_of_fold, select_members
from tuner.ensemble.candidates import Candidate
from tuner.ensemble.fitted import RAW_VIEW, FittedMember
from tuner.ensemble.judge import Blended
from tuner.ensemble.oof import fit_candidate
from tuner.core.errors import TunerError
from tuner.core.metrics import METRICS, direction_sign
from tuner.study.sealed import SealedStudy

NO_WIDE_DEEP = "not built from bagged trials: it would need a training pass of its own"


def bagged_out_of_fold(source: SealedStudy, bags: TrialBags, families: set[str] | None = None) -> tuple[OutOfFold, list[int]]:
    """Every complete trial's stored out-of-fold predictions (of `families` only, if given) over the
    study's own first-repeat folds; returns the record and the trials whose predictions are in
    another machine's folder, not shared."""
    split, dataset, task, study = source.split, source.dataset, source.task, source.study
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if has_oof(t) and (families is None or t.user_attrs[FAMILY_ATTR] in families)]
    if not trials:
        raise TunerError(f"study {source.config.name!r} has no complete bagged trial; run `tuner study run` first")
    rows = split.search_rows()
    y = encode_target(fit_target_encoder(dataset.y[rows], task), dataset.y[rows])
    sign = direction_sign(study.direction)
    trials.sort(key=lambda t: (-sign * t.value, t.number))
    unreachable = [t.number for t in trials if not bags.holds_oof(t)]
    if len(unreachable) == len(trials):
        raise TunerError(f"no stored out-of-fold predictions of study {source.config.name!r} are in {bags.root}; "
                         "point $TUNER_ARTIFACTS at the folder the workers wrote to")
    trials = [t for t in trials if t.number not in unreachable]
    oof = OutOfFold.ranked([Candidate(source, t) for t in trials], [bags.oof(t) for t in trials], y,
                           split.folds[0][rows].astype(np.int64), rows, task, METRICS[source.metric])
    return oof, unreachable


def blend_bagged_trials(source: SealedStudy, on_step: Callable[[str], None], refit: bool = False,
                        families: set[str] | None = None, rebuild_s: float | None = None) -> tuple[Blended, Any, Any]:
    """Choose and assemble the blends of a K-fold study; returns them with the target encoder and
    a preprocessor fitted on every search row (the export's input contract).

    `refit=True` replaces each picked bag by one model refitted on every search row (its params,
    the median step count of its folds): one fit per member, timed in the record (`refit_seconds`);
    selection and out-of-fold scores stay those of the bags. `families` limits the candidates
    (what `run-all` asks when its budget cannot pay for Keras bags). `rebuild_s` bounds the seconds
    that rebuilding the picked let-go bags may take (`run-all`'s time left), each counted as its
    trial's fit seconds in the search: while they exceed it, the costliest is left out and the
    selection runs again (None: no bound).
    """
    started = time.perf_counter()
    bags = TrialBags(artifact_root(source.storage_url))
    oof, unreachable = bagged_out_of_fold(source, bags, families)
    candidates = len(oof.candidates)
    on_step(f"ensemble selection over the out-of-fold predictions of all {candidates} complete trials")

    bound = None if refit else rebuild_s  # a refit fits every picked member anyway: nothing is rebuilt
    too_slow = [] if bound is None else [  # alone past the bound: left out without a selection run
        c.trial.number for c in oof.candidates[1:] if not bags.holds_bag(c.trial) and rebuild_cost(c.trial) > bound]
    oof = oof.subset([i for i, c in enumerate(oof.candidates) if c.trial.number not in too_slow])
    while True:
        selection = select_members(oof)
        costliest = costliest_rebuild([c.trial for c in oof.candidates], selection.picked, bags, bound)
        if costliest is None:
            break
        too_slow.append(oof.candidates[costliest].trial.number)
        oof = oof.subset([i for i in range(len(oof.candidates)) if i != costliest])
    if too_slow:
        on_step(f"{len(too_slow)} trial(s) whose fold models were let go left out of the selection: rebuilding "
                f"them would take longer than the {bound:.0f} s the budget leaves for it")
    record: dict[str, Any] = {"refit_seconds": None, "rebuilt": []}

    def fit_members(picked: list[Candidate], full: Any, encoder: Any) -> list[FittedMember]:
        record["selection_seconds"] = round(time.perf_counter() - started, 2)
        if refit:
            on_step(f"refitting {len(picked)} member(s) on all {len(full.rows)} search rows (--refit)")
            mark = time.perf_counter()
            members = [fit_candidate(c, full, encoder) for c in picked]
            record["refit_seconds"] = round(time.perf_counter() - mark, 2)
            return members
        on_step(f"assembling {len(picked)} bagged member(s) from their stored fold models")
        bagged, record["rebuilt"] = assemble_bags(source, [c.trial for c in picked], bags)
        return [FittedMember(c.study, c.trial.number, c.family, c.trial.user_attrs.get(PARAMS_ATTR, {}), bag.best_step_,
                             RAW_VIEW, bag) for c, bag in zip(picked, bagged)]

    blended, encoder, preprocessor = blend_out_of_fold(source, oof, fit_members, selection)
    blended.record = {
        "folds": source.split.n_folds, "bagged": True, "candidates": len(oof.candidates),
        "selection_seconds": record["selection_seconds"], "unreachable": unreachable, "rebuilt": record["rebuilt"],
        "left_out_for_time": too_slow, "refit_seconds": record["refit_seconds"], "wide_deep_note": NO_WIDE_DEEP,
    }
    return blended, encoder, preprocessor


def costliest_rebuild(trials: list[Any], picked: list[int], bags: TrialBags, rebuild_s: float | None) -> int | None:
    """The picked let-go trial that costs the most to rebuild (its search fit seconds, `duration_s`)
    when rebuilding all picked ones would take longer than `rebuild_s`; None when they fit (or no
    bound). The first trial, the best out of fold, is rebuilt whatever it costs."""
    if rebuild_s is None:
        return None
    costs = {i: rebuild_cost(trials[i]) for i in picked[1:] if not bags.holds_bag(trials[i])}
    if sum(costs.values()) <= rebuild_s:
        return None
    return max(costs, key=costs.get)


def rebuild_cost(trial: Any) -> float:
    """Seconds to rebuild a let-go bag: what fitting its folds took in the search (unknown: too long)."""
    return trial.user_attrs.get(DURATION_ATTR, float("inf"))
