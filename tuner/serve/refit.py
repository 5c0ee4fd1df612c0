"""The exported blend learns from every row: its members trained again on the search rows and the sealed test rows.

The ensemble build scores each blend once on the sealed test rows, with members that never saw
them. After that one look the test rows have nothing left to judge, so `tuner export` (by
default) trains the chosen blend's members again on every row of the user's data, as FLAML's
`retrain_full` and AutoGluon's `refit_full` do: the combiner and its weights stay as chosen out of
fold, and the test score describes the same blend trained without the test rows. Refits reuse the
search's own rebuild path (`tuner.study.trial_bags.refit_fold`): each trial's params, the step
count early stopping kept, and preprocessing fitted on each fit's own training rows.

- `bag` (default): a fresh K-fold bag over every row (the study's K; a holdout study's build K),
  each fold model trained on the other folds, behind that fold's own preprocessing;
- `single`: one model per member on every row (1/K of the bag's cost);
- `none`: the blend exactly as it was scored.

Boosting rounds scale with the rows a model trains on (rounds x rows / the trial's training rows);
epochs do not, since an epoch already passes over every row.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from tuner.core.errors import TunerError
from tuner.data.split import TRAIN
from tuner.ensemble.fitted import RAW_VIEW, FittedEnsemble, FittedMember
from tuner.models import FAMILIES
from tuner.models.bagged_member import BaggedMember
from tuner.study.trial_attrs import BEST_STEP_ATTR, FOLD_STEPS_ATTR

REFIT_MODES = ("bag", "single", "none")
DEFAULT_FOLDS = 5  # a holdout build that recorded no K (the ensemble build's default)
SCORES_NOTE = "the oof and test scores describe the same blend trained without the sealed test rows"


def refit_refusal(ensemble: FittedEnsemble) -> str | None:
    """Why this blend cannot be trained again member by member (None: it can)."""
    if ensemble.combiner.views():
        return f"the {ensemble.name} blend trains its combiner together with its members"
    return None


def as_scored(build: dict[str, Any], why: str | None = None) -> dict[str, Any]:
    """The `trained_on` record of a blend exported exactly as the build scored it."""
    rows = build.get("rows", {}).get("oof")
    bags = build.get("bagged") and build.get("refit_seconds") is None
    kind = f"{build['folds']}-fold bags" if bags else "one model per member"
    record = {"refit": "none", "rows": rows, "includes_test_rows": False,
              "description": f"the search rows only ({rows} rows, {kind}), as scored on the sealed test rows"}
    return {**record, "why": why} if why else record


def refit_on_every_row(ensemble: FittedEnsemble, build: dict[str, Any], mode: str, storage_url: str | None,
                       on_step: Callable[[str], None] = lambda message: None) -> tuple[FittedEnsemble, dict[str, Any]]:
    """The blend with its members trained on every row (`mode` `bag` or `single`), and its `trained_on` record."""
    from tuner.data.preprocess import prepare_parts
    from tuner.ensemble.candidates import open_sources
    from tuner.ensemble.oof import fold_ids
    from tuner.study.trial_bags import fold_parts

    sources = {s.config.name: s for s in open_sources(build["studies"], storage_url)}
    first = next(iter(sources.values()))
    split, dataset, task = first.split, first.dataset, first.task
    if split.digest != build.get("split_digest", split.digest):
        raise TunerError(f"study {first.config.name!r} no longer has the split ensemble {build['name']!r} was built "
                         "on; rebuild it, or export with --refit none")
    every = np.arange(len(dataset.y))
    full, _, preprocessor, encoder = prepare_parts(dataset, task, every, {})
    classes = None if encoder is None else [c.item() if isinstance(c, np.generic) else c for c in encoder.classes_]
    if classes != ensemble.classes:
        raise TunerError(f"every row has the classes {classes}, the blend {ensemble.classes}; export with --refit none")
    folds = split.n_folds or build.get("folds") or DEFAULT_FOLDS
    fit_rows = ([every] if mode == "single"
                else [every[ids != fold] for ids in [fold_ids(full.y, task, folds, split.seed)] for fold in range(folds)])
    on_step(f"refit: {len(ensemble.members)} member(s) on all {len(every)} rows (search + sealed test), "
            + ("one model each" if mode == "single" else f"{folds}-fold bags"))
    started = time.perf_counter()
    parts: dict[str, list] = {}
    members, rounds = [], {}
    for fitted in ensemble.members:
        source = sources[fitted.study]
        if fitted.study not in parts:
            parts[fitted.study] = fold_parts(source, fit_rows)
        member, rounds[fitted.label] = _refit_member(fitted, source, parts[fitted.study], mode)
        members.append(member)
    refitted = FittedEnsemble(ensemble.name, task, ensemble.metric, ensemble.classes, preprocessor, members,
                              ensemble.combiner, dataset.fingerprint, split.digest, dict(ensemble.scores),
                              ensemble.example)
    counts = split.counts()
    shape = "one model per member" if mode == "single" else f"{folds}-fold bag"
    return refitted, {
        "refit": mode, "rows": int(len(every)), "includes_test_rows": True,
        "search_rows": int(len(split.search_rows())), "test_rows": counts["test"], "folds": None if mode == "single" else folds,
        "description": f"all {len(every)} rows (search + sealed test), {shape}", "steps": rounds,
        "seconds": round(time.perf_counter() - started, 2), "scores": SCORES_NOTE,
    }


def _refit_member(fitted: FittedMember, source: Any, parts: list, mode: str) -> tuple[FittedMember, list[int] | None]:
    """One member trained again on each of `parts` (one part: a single model; K: a bag), from its
    trial's params and step counts; returns it and the epochs or rounds each fit trained for."""
    from tuner.study.trial_bags import refit_fold

    trial = next((t for t in source.study.get_trials(deepcopy=False) if t.number == fitted.trial), None)
    if trial is None:
        raise TunerError(f"trial {fitted.trial} of study {fitted.study!r} is gone; export with --refit none")
    family = FAMILIES[fitted.family]
    models = []
    for index, (train, _, spec) in enumerate(parts):
        steps, trained_rows = _recorded_steps(trial, source.split, index, mode)
        rounds = None if steps is None else max(1, int(round(steps * len(train) / trained_rows)))
        models.append(refit_fold(family, trial, train, spec, steps, rounds))
    trained = [model.best_step_ for model in models]  # the epochs or rounds each fit trained for
    view = family.view_for(parts[0][2])
    if mode == "single":
        member = FittedMember(fitted.study, fitted.trial, fitted.family, fitted.params, trained[0], view, models[0])
    else:
        bag = BaggedMember(models, [preprocessor for _, preprocessor, _ in parts], view)
        member = FittedMember(fitted.study, fitted.trial, fitted.family, fitted.params, bag.best_step_, RAW_VIEW, bag)
    return member, None if None in trained else trained


def _recorded_steps(trial: Any, split: Any, index: int, mode: str) -> tuple[int | None, int]:
    """The steps early stopping kept where the trial trained, and on how many rows: a K-fold trial's
    fold `index` (a single model: the median over folds, on a fold's rows), a holdout trial's train rows."""
    from tuner.study.trial_bags import fold_steps

    recorded = trial.user_attrs.get(FOLD_STEPS_ATTR)
    if not recorded or not split.n_folds:
        return trial.user_attrs.get(BEST_STEP_ATTR), int(len(split.rows(TRAIN)))
    fold_rows = split.fold_rows()
    if mode == "single":
        return trial.user_attrs.get(BEST_STEP_ATTR), int(np.median([len(train) for train, _ in fold_rows]))
    index %= len(recorded)
    return fold_steps(trial, index), int(len(fold_rows[index][0]))

