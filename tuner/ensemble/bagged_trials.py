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

from tuner.study.trial_attrs import BEST_STEP_ATTR, DURATION_ATTR, FAMILY_ATTR, PARAMS_ATTR
from tuner.study.trial_bags import TrialBags, artifact_root, assemble_bags, has_oof
from tuner.data.preprocess import encode_target, fit_target_encoder, prepare_parts
from tuner.ensemble.blends import stacked_out_of_fold
from tuner.ensemble.candidates import Candidate
from tuner.ensemble.fitted import RAW_VIEW, FittedEnsemble, FittedMember
from tuner.ensemble.judge import Blended, choose_blend, standard_blends
from tuner.ensemble.oof import fit_candidate
from tuner.ensemble.selection import cross_fitted, greedy_selection, optimised_weights
from tuner.core.errors import TunerError
from tuner.core.metrics import METRICS, direction_sign
from tuner.study.sealed import SealedStudy

EXAMPLE_ROWS = 5
NO_WIDE_DEEP = "not built from bagged trials: it would need a training pass of its own"


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
    split, dataset, task, metric = source.split, source.dataset, source.task, METRICS[source.metric]
    study = source.study
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if has_oof(t) and (families is None or t.user_attrs[FAMILY_ATTR] in families)]
    if not trials:
        raise TunerError(f"study {source.config.name!r} has no complete bagged trial; run `tuner study run` first")
    started = time.perf_counter()
    bags = TrialBags(artifact_root(source.storage_url))
    rows = split.search_rows()
    encoder = fit_target_encoder(dataset.y[rows], task)
    y = encode_target(encoder, dataset.y[rows])
    ids = split.folds[0][rows].astype(np.int64)  # the study's own first-repeat folds
    sign = direction_sign(study.direction)
    trials.sort(key=lambda t: (-sign * t.value, t.number))
    unreachable = [t.number for t in trials if not bags.holds_oof(t)]  # another machine's folder, not shared
    if len(unreachable) == len(trials):
        raise TunerError(f"no stored out-of-fold predictions of study {source.config.name!r} are in {bags.root}; "
                         "point $TUNER_ARTIFACTS at the folder the workers wrote to")
    trials = [t for t in trials if t.number not in unreachable]
    predictions = [bags.oof(t).astype(np.float64) for t in trials]
    oof_score = [metric.score(y, p) for p in predictions]
    order = sorted(range(len(trials)), key=lambda i: (-sign * oof_score[i], i))  # best out of fold first
    trials, predictions, oof_score = [trials[i] for i in order], [predictions[i] for i in order], [oof_score[i] for i in order]
    on_step(f"ensemble selection over the out-of-fold predictions of all {len(trials)} complete trials")

    bound = None if refit else rebuild_s  # a refit fits every picked member anyway: nothing is rebuilt
    too_slow = [] if bound is None else [  # alone past the bound: left out without a selection run
        t.number for t in trials[1:] if not bags.holds_bag(t) and rebuild_cost(t) > bound]
    kept = [i for i, t in enumerate(trials) if t.number not in too_slow]
    trials, predictions, oof_score = [trials[i] for i in kept], [predictions[i] for i in kept], [oof_score[i] for i in kept]
    while True:
        caruana = greedy_selection(predictions, y, metric)
        picked = [i for i in range(len(trials)) if caruana[i] > 0 or i == 0]
        costliest = costliest_rebuild(trials, picked, bags, bound)
        if costliest is None:
            break
        too_slow.append(trials[costliest].number)
        del trials[costliest], predictions[costliest], oof_score[costliest]
    if too_slow:
        on_step(f"{len(too_slow)} trial(s) whose fold models were let go left out of the selection: rebuilding "
                f"them would take longer than the {bound:.0f} s the budget leaves for it")
    pool = [predictions[i] for i in picked]
    classification = task != "regression"
    blend_oof = {
        "best_single": predictions[0],
        "average": np.mean(pool, axis=0),
        "stacked": stacked_out_of_fold(pool, y, task, ids),
    }
    caruana_oof = cross_fitted(lambda p, t: greedy_selection(p, t, metric), predictions, y, ids)
    optimised_oof = cross_fitted(lambda p, t: optimised_weights(p, t, classification), pool, y, ids)
    if metric.better(metric.score(y, optimised_oof), metric.score(y, caruana_oof)):
        weighting, pool_weights, blend_oof["weighted"] = "optimised weights (SLSQP)", optimised_weights(pool, y, classification), optimised_oof
    else:
        weighting, pool_weights, blend_oof["weighted"] = "greedy selection (Caruana)", caruana[picked], caruana_oof
    selection_s = time.perf_counter() - started

    full, _, preprocessor, _ = prepare_parts(dataset, task, rows, {})
    refit_s, rebuilt = None, []
    if refit:
        on_step(f"refitting {len(picked)} member(s) on all {len(rows)} search rows (--refit)")
        mark = time.perf_counter()
        members = [_refit_on_all(source, trials[i], full, encoder) for i in picked]
        refit_s = round(time.perf_counter() - mark, 2)
    else:
        on_step(f"assembling {len(picked)} bagged member(s) from their stored fold models")
        bagged, rebuilt = assemble_bags(source, [trials[i] for i in picked], bags)
        members = [FittedMember(source.config.name, t.number, t.user_attrs[FAMILY_ATTR], t.user_attrs.get(PARAMS_ATTR, {}),
                                bag.best_step_, RAW_VIEW, bag) for t, bag in zip([trials[i] for i in picked], bagged)]
    classes = None if encoder is None else list(encoder.classes_)

    def ensemble(blend: str, chosen: list[FittedMember], combiner) -> FittedEnsemble:
        return FittedEnsemble(blend, task, metric.name, classes, preprocessor, chosen, combiner, dataset.fingerprint,
                              split.digest, example=full.raw[:EXAMPLE_ROWS])

    ensembles = standard_blends(ensemble, members, pool_weights, pool, y, task)
    oof_scores = {blend: metric.score(y, blend_oof[blend]) for blend in ensembles}
    member_rows = [{"label": f"{source.config.name}#{t.number} {t.user_attrs[FAMILY_ATTR]}", "study": source.config.name,
                    "trial": t.number, "family": t.user_attrs[FAMILY_ATTR], "params": t.user_attrs.get(PARAMS_ATTR, {}),
                    "steps": t.user_attrs.get(BEST_STEP_ATTR), "val": t.value, "oof": oof_score[i]}
                   for i, t in zip(picked, [trials[i] for i in picked])]
    blended = Blended(members, member_rows, pool_weights, pool, ensembles, oof_scores,
                      choose_blend(oof_scores, metric), weighting, {
                          "folds": split.n_folds, "bagged": True, "candidates": len(trials),
                          "selection_seconds": round(selection_s, 2), "unreachable": unreachable, "rebuilt": rebuilt, "left_out_for_time": too_slow,
                          "refit_seconds": refit_s,
                          "wide_deep_note": NO_WIDE_DEEP,
                      })
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


def _refit_on_all(source: SealedStudy, trial: Any, full: Any, encoder: Any) -> FittedMember:
    return fit_candidate(Candidate(source, trial), full, encoder)
