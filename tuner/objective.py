"""The Optuna objective: choose a family, suggest its params, fit on train, score on validation.

It is handed the training and validation parts only; the sealed test rows never reach it.
A failing fit is recorded (FAILED run, `error` attribute) and the search goes on; a pruned one is
recorded as PRUNED with the curves it had so far.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.budget import TimeBudget
from tuner.config import StudyConfig
from tuner.data import Part
from tuner.metrics import METRICS
from tuner.models import FAMILIES, ProblemSpec, ScopedTrial


class TrialFailed(Exception):
    """A trial whose fit raised; Optuna records it as FAIL and the search continues."""


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Trials that spend the budget: not family-cap skips, not heartbeat-stale fails (those re-run)."""
    if trial.user_attrs.get("skipped"):
        return False
    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class Objective:
    def __init__(self, config: StudyConfig, spec: ProblemSpec, train: Part, val: Part,
                 tracker: Any, experiment_id: str, parent_run_id: str, run_tags: dict[str, str],
                 budget: TimeBudget | None = None) -> None:
        self.config = config
        self.budget = budget or TimeBudget(None)
        self.spec = spec
        self.train = train
        self.val = val
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.run_tags = run_tags
        self.metric = METRICS[spec.metric]
        self.score_name = spec.custom_monitor or f"val_{spec.metric}"

    def __call__(self, trial: optuna.Trial) -> float:
        family_name = self._choose_family(trial)
        family = FAMILIES[family_name]
        params = family.search_space(ScopedTrial(trial, family_name), self.spec)
        trial.set_user_attr("params", params)
        run_id = self.tracker.start_trial(self.experiment_id, self.parent_run_id, trial.number,
                                          family_name, params, self.run_tags)
        if family.uses_keras:
            from tuner.models.keras_training import keras

            keras().utils.set_random_seed(self.spec.seed + trial.number)
        started = time.perf_counter()
        member = None
        try:
            view = family.view_for(self.spec)
            member = family.build(params, self.spec)
            member.fit(self.train.X(view), self.train.y, self.val.X(view), self.val.y, trial=trial)
            value = getattr(member, "validation_score_", None)  # a custom model scored by its monitor
            if value is None:
                value = self.metric.score(self.val.y, member.predict_scores(self.val.X(view)))
            if not math.isfinite(value):
                raise ValueError(f"validation {self.score_name} is {value}")
        except optuna.TrialPruned:
            self._finish(trial, run_id, "PRUNED", member, started)
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".strip()
            trial.set_user_attr("error", message[:2000])
            self._finish(trial, run_id, "FAILED", member, started, error=traceback.format_exc())
            raise TrialFailed(message) from exc
        except BaseException:  # Ctrl-C or a kill signal turned exception: close the run, then stop
            self._finish(trial, run_id, "KILLED", member, started)
            raise
        finally:
            if family.uses_keras:
                from tuner.models.keras_training import release_memory

                release_memory()
        if member.best_step_ is not None:
            trial.set_user_attr("best_step", member.best_step_)
        self._finish(trial, run_id, "COMPLETE", member, started, value=value)
        return value

    def _choose_family(self, trial: optuna.Trial) -> str:
        names = sorted(self.config.families)
        name = trial.suggest_categorical("family", names) if len(names) > 1 else names[0]
        trial.set_user_attr("family", name)
        cap = self.config.families[name].max_trials
        if cap is not None:
            used = sum(1 for t in trial.study.get_trials(deepcopy=False)
                       if t.number != trial.number and t.user_attrs.get("family") == name and counts_toward_budget(t))
            if used >= cap:
                trial.set_user_attr("skipped", f"{name} reached max_trials={cap}")
                if all(self.config.families[n].max_trials is not None for n in names) and self._all_capped(trial):
                    trial.study.stop()
                raise optuna.TrialPruned(f"{name} reached max_trials={cap}")
        trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if not self.budget.fits(trials, name):
            reason = f"{name} would not finish in the {self.budget.remaining():.0f} s left of the timeout"
            trial.set_user_attr("skipped", reason)
            if not self.budget.any_fits(trials, names):
                trial.study.stop()
            raise optuna.TrialPruned(reason)
        return name

    def _all_capped(self, trial: optuna.Trial) -> bool:
        trials = trial.study.get_trials(deepcopy=False)
        return all(
            sum(1 for t in trials if t.user_attrs.get("family") == n and counts_toward_budget(t)) >= cfg.max_trials
            for n, cfg in self.config.families.items()
        )

    def _finish(self, trial: optuna.Trial, run_id: str | None, state: str, member: Any, started: float,
                value: float | None = None, error: str | None = None) -> None:
        duration = time.perf_counter() - started
        trial.set_user_attr("duration_s", round(duration, 3))
        curves = getattr(member, "curves_", {}) if member is not None else {}
        scores = {self.score_name: value} if value is not None else {}
        prefix = "epoch" if FAMILIES[trial.user_attrs["family"]].uses_keras else "round"
        self.tracker.finish_trial(run_id, state, scores, {f"{prefix}/{k}": v for k, v in curves.items()},
                                  duration, error=error)
