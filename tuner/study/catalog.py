"""Reading studies back: the leaderboard by family (`describe_study`), `list_studies`, `delete_study`,
and the counter of looks at the sealed test rows.

Nothing here runs a trial or reads a data file; it reads what the storage holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import BAG_ATTR, DURATION_ATTR, FAMILY_ATTR, OOF_ATTR, PARAMS_ATTR, SKIPPED_ATTR
from tuner.core.config import StudyConfig
from tuner.core.metrics import direction_sign
from tuner.search.objective import counts_toward_budget
from tuner.study.sealed import ATTR, chosen_families, stored_score_name
from tuner.study.storage import (
    DEFAULT_STORAGE, load_existing, local_file, normalize_url, open_storage, resolve_storage_url,
)
from tuner.study.trial_bags import TrialBags, artifact_root


def best_among(trials: list[FrozenTrial], direction: optuna.study.StudyDirection) -> FrozenTrial | None:
    """The best completed trial of an already-read trial list (`study.best_trial` without its query);
    a tie goes to the earlier trial."""
    sign = direction_sign(direction)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: (-sign * t.value, t.number)) if complete else None


def best_of(study: optuna.Study) -> tuple[float | None, str | None]:
    """The best trial's value and family, or (None, None) before any trial completed."""
    try:
        best = study.best_trial
    except ValueError:
        return None, None
    return best.value, best.user_attrs.get(FAMILY_ATTR)


@dataclass
class FamilyRow:
    family: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_trial: int | None
    mean_seconds: float | None


@dataclass
class StudyReport:
    name: str
    metric: str
    direction: str
    task: str
    data: str
    split_counts: dict[str, int]  # train, val, test (and holdout when the study has one)
    states: dict[str, int]
    families: list[FamilyRow]
    best_trial: int | None
    best_value: float | None
    best_family: str | None
    best_params: dict[str, Any]
    score_name: str = ""  # val_<metric> or cv_<metric>
    folds: str = ""  # "5 folds x 2 repeats" for a K-fold study
    finalize: dict[str, Any] | None = None  # finalize's record once the test split was scored
    holdout_budget: str = ""  # "budget left 28 of 30 after 5 queries" for a study with a reusable holdout
    test_looks: int = 0  # the live counter: finalize's and every ensemble build's looks
    test_lookers: list[str] = field(default_factory=list)  # the command behind each look, oldest first
    not_counted: dict[str, int] = field(default_factory=dict)  # trials outside the budget, by why (see uncounted_reason)
    chosen_families: str = ""  # "families chosen by tuner: ... (why)" when the study file names none


def describe_study(name: str, storage_url: str | None = None) -> StudyReport:
    study = load_existing(name, storage_url)
    attrs = study.user_attrs
    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if counts_toward_budget(t)]  # what the budget counts, so the totals match it
    not_counted = dict(Counter(uncounted_reason(t) for t in everything if not counts_toward_budget(t)))
    sign = direction_sign(study.direction)
    rows = []
    for family in sorted({t.user_attrs.get(FAMILY_ATTR, "?") for t in trials}):
        mine = [t for t in trials if t.user_attrs.get(FAMILY_ATTR) == family]
        complete = [t for t in mine if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: sign * t.value) if complete else None
        durations = [t.user_attrs[DURATION_ATTR] for t in mine if DURATION_ATTR in t.user_attrs]
        rows.append(FamilyRow(
            family, len(mine), len(complete), sum(t.state == TrialState.PRUNED for t in mine),
            sum(t.state == TrialState.FAIL for t in mine), best.value if best else None,
            best.number if best else None, sum(durations) / len(durations) if durations else None,
        ))
    rows.sort(key=lambda r: (r.best_value is None, -sign * (r.best_value or 0.0)))
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    best_value, best_family = best_of(study)
    best = study.best_trial if best_value is not None else None
    split = attrs.get(ATTR + "split", {})
    return StudyReport(
        name=name, metric=attrs.get(ATTR + "metric", "?"), direction=study.direction.name.lower(),
        task=attrs.get(ATTR + "task", "?"), data=attrs.get(ATTR + "config", {}).get("data", {}).get("source", "?"),
        split_counts={k: split.get(f"n_{k}", 0) for k in ("train", "val", "test", "holdout") if k != "holdout" or
                      split.get("n_holdout")}, states=states,
        families=rows, best_trial=best.number if best else None, best_value=best_value, best_family=best_family,
        best_params=best.user_attrs.get(PARAMS_ATTR, {}) if best else {}, score_name=stored_score_name(attrs),
        folds=f"{split['n_folds']} folds x {split['n_repeats']} repeat(s)" if "n_folds" in split else "",
        finalize=attrs.get(ATTR + "finalize"), holdout_budget=_holdout_budget(attrs), not_counted=not_counted,
        test_looks=int(attrs.get(ATTR + "test_looks", 0)), test_lookers=list(attrs.get(ATTR + "test_lookers", [])),
        chosen_families=choice.line() if (choice := chosen_families(attrs)) else "",
    )


def count_test_look(study: optuna.Study, command: str) -> int:
    """Count one look at the sealed test rows, naming the command that took it; returns the new count.

    Called at the moment test rows are first scored, so a failure before that costs no look."""
    looks = int(study.user_attrs.get(ATTR + "test_looks", 0)) + 1
    study.set_user_attr(ATTR + "test_looks", looks)
    study.set_user_attr(ATTR + "test_lookers", [*study.user_attrs.get(ATTR + "test_lookers", []), command])
    return looks


def uncounted_reason(trial: FrozenTrial) -> str:
    """Why a trial does not spend the budget: refused at its start, waiting in the queue, or stopped
    (Ctrl-C, SIGTERM, a lost worker) and queued again with the same params."""
    if trial.user_attrs.get(SKIPPED_ATTR):
        return "skipped"
    return "queued" if trial.state == TrialState.WAITING else "stopped and re-queued"


def _holdout_budget(attrs: dict[str, Any]) -> str:
    split = StudyConfig.model_validate(attrs[ATTR + "config"]).split if ATTR + "config" in attrs else None
    thresholdout = split.reusable_holdout if split is not None else None
    if thresholdout is None:
        return ""
    state = attrs.get(ATTR + "thresholdout") or {"budget_left": thresholdout.budget, "queries": 0}
    return f"budget left {state['budget_left']} of {thresholdout.budget} after {state['queries']} queries"


def list_studies(storage_url: str | None = None) -> list[dict[str, Any]]:
    """Every study in the storage; none in a project's default storage that no study has created yet."""
    url = normalize_url(resolve_storage_url(storage_url))
    if url == DEFAULT_STORAGE and not local_file(url).is_file():
        return []
    storage = open_storage(url, create=False)
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
        rows.append({
            "name": summary.study_name, "trials": sum(map(counts_toward_budget, trials)),  # as the budget counts
            "metric": summary.user_attrs.get(ATTR + "metric", "?"),
            "score_name": stored_score_name(summary.user_attrs),
            "direction": summary.direction.name.lower(),
            "best": summary.best_trial.value if summary.best_trial else None,
            "data": summary.user_attrs.get(ATTR + "config", {}).get("data", {}).get("source", "?"),
            "started": summary.datetime_start,
        })
    return rows


def delete_study(name: str, storage_url: str | None = None) -> None:
    """Remove the study from Optuna storage, and its trials' bags (out-of-fold predictions, fold
    models); its MLflow runs stay as a record."""
    study = load_existing(name, storage_url)
    stored = [t.user_attrs[key] for t in study.get_trials(deepcopy=False) for key in (OOF_ATTR, BAG_ATTR)
              if key in t.user_attrs]
    optuna.delete_study(study_name=name, storage=study._storage)
    if stored:
        bags = TrialBags(artifact_root(resolve_storage_url(storage_url)))
        for artifact in stored:
            try:
                bags.store.remove(artifact)
            except FileNotFoundError:  # let go after the search, or kept on another machine
                pass
