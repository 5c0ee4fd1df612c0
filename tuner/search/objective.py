"""The Optuna objective: choose a family, suggest its params, fit on train, score on validation.

It is handed folds of (training part, validation part) only; the sealed test (and holdout) rows
never reach it. A holdout study has one fold and its score is `val_<metric>`; a K-fold study has
one per fold and repeat, its score is `cv_<metric>`, the mean over folds, and the running mean is
reported to the pruner after each fold so a poor configuration stops after a fold or two.
A failing fit is recorded (FAILED run, `error` attribute) and the search goes on; a pruned one is
recorded as PRUNED with the curves it had so far.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import (
    BAG_ATTR, BEST_STEP_ATTR, CUT_ATTR, DURATION_ATTR, ERROR_ATTR, FAMILY_ATTR, FOLD_SCORES_ATTR, FOLD_STEPS_ATTR,
    FOLDS_AT_ONCE_ATTR,
    PARAMS_ATTR, SKIPPED_ATTR,
)
from tuner.search.fold_fits import FoldFit, FoldFitter
from tuner.search.time_budget import TimeBudget
from tuner.core.config import StudyConfig
from tuner.core.secrets import redact_url
from tuner.data import Part
from tuner.core.metrics import METRICS, direction_sign
from tuner.models import FAMILIES, Family, ProblemSpec, ScopedTrial


WORKER_FOLD_S = 0.3  # a family whose folds take this long has them fitted side by side (see _folds_at_once)


@dataclass
class Fold:
    """One training part and the validation part that scores it; `spec` is sized by this fold's preprocessing."""

    train: Part
    val: Part
    spec: ProblemSpec


def score_name(config: StudyConfig, spec: ProblemSpec) -> str:
    """`val_<metric>` for one validation part, `cv_<metric>` for the mean over folds."""
    name = spec.custom_monitor.removeprefix("val_") if spec.custom_monitor else spec.metric
    return config.split.score_prefix() + name


class OutOfFold:
    """Each search row's prediction from the fold model that did not see it (averaged over repeats)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.total: np.ndarray | None = None
        self.count = np.zeros(len(rows))

    def add(self, fold_rows: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if self.total is None:
            self.total = np.zeros((len(self.rows), *scores.shape[1:]))
        at = np.searchsorted(self.rows, fold_rows)
        self.total[at] += scores
        self.count[at] += 1

    def mean(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.total.ndim - 1)
        return self.total / np.maximum(self.count, 1).reshape(shape)


class TrialFailed(Exception):
    """A trial whose fit raised; Optuna records it as FAIL and the search continues."""


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Trials that spend the budget: not family-cap skips, not heartbeat-stale fails (those re-run)."""
    if trial.user_attrs.get(SKIPPED_ATTR):
        return False
    if trial.state == TrialState.FAIL:
        return ERROR_ATTR in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class Objective:
    def __init__(self, config: StudyConfig, folds: list[Fold], tracker: Any, experiment_id: str,
                 parent_run_id: str, run_tags: dict[str, str], budget: TimeBudget | None = None,
                 bags: Any = None, search_rows: np.ndarray | None = None, fold_workers: int = 1) -> None:
        """`bags` (a `tuner.study.trial_bags.TrialBags`) keeps each K-fold trial's out-of-fold predictions of
        `search_rows` and its fold models, so ensembles are built from the search itself; `fold_workers`
        fit that many folds at once."""
        self.config = config
        self.bags = bags if config.split.cross_validated else None
        self.search_rows = search_rows
        self.folds = folds
        self.fitter = FoldFitter(fold_workers if config.split.cross_validated else 1)
        self.fitter.warm_up([FAMILIES[name] for name in config.families])
        self.spec = folds[0].spec  # what the search space sees; each fold builds with its own spec
        self.cross_validated = config.split.cross_validated
        self.budget = budget or TimeBudget(None)
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.run_tags = run_tags
        self.metric = METRICS[self.spec.metric]
        self.score_name = score_name(config, self.spec)
        self.fold_score_name = self.spec.custom_monitor or f"val_{self.spec.metric}"

    def __call__(self, trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> float:
        """`trials`: the study's trials as read at this trial's start (the budget guard's read), so
        the family caps and the time check need no read of their own."""
        trials = trial.study.get_trials(deepcopy=False) if trials is None else trials
        family_name = self._choose_family(trial, trials)
        family = FAMILIES[family_name]
        started = time.perf_counter()
        curves: dict[str, list[float]] = {}
        fold_scores: list[float] = []
        steps: list[int | None] = []
        fold_members: list[Any] = []
        oof = OutOfFold(self.search_rows) if self.bags is not None else None
        run_id = None
        try:
            # a user's builder runs here too (the custom family learns its space by calling it)
            params = family.search_space(ScopedTrial(trial, family_name), self.spec)
            trial.set_user_attr(PARAMS_ATTR, params)
            run_id = self.tracker.start_trial(self.experiment_id, self.parent_run_id, trial.number,
                                              family_name, params, self.run_tags)
            wave = self._folds_at_once(family, trials)
            trial.set_user_attr(FOLDS_AT_ONCE_ATTR, wave)
            sign = direction_sign(trial.study.direction)
            best = self._best_value(trials, sign)
            for start in range(0, len(self.folds), wave):
                leading = bool(fold_scores) and self._leads(float(np.mean(fold_scores)), best, sign)
                if start:
                    self._check_time_left(trial, start, wave, started, leading)
                folds = self.folds[start:start + wave]
                # per-epoch pruning only without folds: with folds the pruner sees the running mean per fold
                fits = self._fit(family, params, folds, trial.number, None if self.cross_validated else trial,
                                 curves if start == 0 else None, self.budget.deadline_for(leading))
                for index, (fold, fit) in enumerate(zip(folds, fits), start):
                    if index == 0:
                        curves.update(fit.curves)  # the first fold's curves, kept even when it fails
                    if fit.error is not None:
                        fit.error.fold_trace = fit.error_trace
                        raise fit.error
                    value = fit.own_score
                    if value is None:
                        value = self.metric.score(fold.val.y, fit.predicted)
                    if not math.isfinite(value):
                        raise ValueError(f"validation {self.fold_score_name} is {value}" + (
                            f" on fold {index + 1}" if self.cross_validated else ""))
                    fold_scores.append(float(value))
                    steps.append(fit.member.best_step_)
                    if oof is not None:
                        oof.add(fold.val.rows, fit.predicted)
                        fold_members.append(fit.member)  # a bag keeps every fold model
                    if self.cross_validated:
                        self._report_fold(trial, fold_scores)
                del fits
                if oof is None and start + wave < len(self.folds):
                    family.release_memory()  # this fold's model, before the next one is built
            value = float(np.mean(fold_scores))
            if oof is not None:
                trial.set_user_attr(FOLD_STEPS_ATTR, steps)
                self.bags.save(trial, oof.mean(), fold_members, family.view_for(self.spec))
        except optuna.TrialPruned:
            self._finish(trial, family, run_id, "PRUNED", curves, fold_scores, started)
            raise
        except Exception as exc:
            message = redact_url(f"{type(exc).__name__}: {exc}".strip())
            trial.set_user_attr(ERROR_ATTR, message[:2000])
            if run_id is None:  # failed before its params were known: a run still records the error
                run_id = self.tracker.start_trial(self.experiment_id, self.parent_run_id, trial.number,
                                                  family_name, {}, self.run_tags)
            self._finish(trial, family, run_id, "FAILED", curves, fold_scores, started,
                         error=getattr(exc, "fold_trace", None) or traceback.format_exc())
            raise TrialFailed(message) from exc
        except BaseException:  # Ctrl-C or a kill signal turned exception: close the run, then stop
            self._finish(trial, family, run_id, "KILLED", curves, fold_scores, started)
            raise
        finally:
            family.release_memory()
        if all(step is not None for step in steps):
            trial.set_user_attr(BEST_STEP_ATTR, int(round(float(np.median(steps)))))  # finalize refits with it
        self._finish(trial, family, run_id, "COMPLETE", curves, fold_scores, started, value=value)
        if self.bags is not None:
            sign = direction_sign(trial.study.direction)
            done = [(t.number, t.value, t.user_attrs) for t in
                    trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            self.bags.let_go([*done, (trial.number, value, {FAMILY_ATTR: family_name, **{
                key: trial.user_attrs[key] for key in (BAG_ATTR,) if key in trial.user_attrs}})], sign)
        return value

    def _check_time_left(self, trial: optuna.Trial, done: int, wave: int, started: float, leading: bool) -> None:
        """A bag whose waves of folds so far say the rest cannot finish before the deadline stops now
        (pruned); one whose running score leads the study may use the budget's grace."""
        per_wave = (time.perf_counter() - started) / math.ceil(done / wave)
        left = len(self.folds) - done
        needed = per_wave * math.ceil(left / wave)
        remaining = self.budget.remaining() + (self.budget.grace_s if leading else 0.0)
        if needed > remaining:
            trial.set_user_attr(CUT_ATTR, f"{left} more fold(s) need about {needed:.0f} s; "
                                          f"{max(remaining, 0):.0f} s were left")
            raise optuna.TrialPruned(trial.user_attrs[CUT_ATTR])

    @staticmethod
    def _best_value(trials: list[FrozenTrial], sign: int) -> float | None:
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        return max(values, key=lambda v: sign * v) if values else None

    @staticmethod
    def _leads(running: float, best: float | None, sign: int) -> bool:
        """Whether a running mean beats every completed trial of the study so far."""
        return best is not None and sign * running > sign * best

    def _folds_at_once(self, family: Family, trials: list[FrozenTrial]) -> int:
        """Side by side unless this family's record in the study says a fold takes under `WORKER_FOLD_S`
        (cheap fits gain nothing) or under half of what loading its library in the workers costs, or,
        with no record yet, the workers are still starting (the first trials run here meanwhile)."""
        if not self.cross_validated:
            return 1
        seconds = [t.user_attrs[DURATION_ATTR] * t.user_attrs.get(FOLDS_AT_ONCE_ATTR, 1) / len(t.user_attrs[FOLD_SCORES_ATTR])
                   for t in trials if t.user_attrs.get(FAMILY_ATTR) == family.name and t.user_attrs.get(FOLD_SCORES_ATTR)
                   and DURATION_ATTR in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if not seconds:
            ready = self.fitter.warm() and not family.worker_start_s
            return self.fitter.wave_size(family, len(self.folds)) if ready else 1
        starting = 0.0 if family.name in self.fitter.loaded else family.worker_start_s / 2
        if float(np.median(seconds)) < max(WORKER_FOLD_S, starting):
            return 1
        return self.fitter.wave_size(family, len(self.folds))

    def _fit(self, family: Family, params: dict[str, Any], folds: list[Fold], number: int,
             trial: optuna.Trial | None, curves: dict[str, list[float]] | None, deadline: float | None) -> list[FoldFit]:
        """Members fitted on the folds' training rows, side by side; each fold's validation rows stop it
        early, and predictions of them are kept for the trial's bag."""
        data = [(f.train.X(family.view_for(f.spec)), f.train.y, f.val.X(family.view_for(f.spec)), f.val.y)
                for f in folds]
        return self.fitter.fit(family, params, [f.spec for f in folds], number, data, deadline,
                               predict=self.bags is not None, trial=trial, curves=curves)

    def _report_fold(self, trial: optuna.Trial, fold_scores: list[float]) -> None:
        """The running mean over the folds so far is the pruner's intermediate value at step = fold index."""
        mean = float(np.mean(fold_scores))
        trial.report(mean, len(fold_scores) - 1)
        if len(fold_scores) < len(self.folds) and trial.should_prune():
            raise optuna.TrialPruned(f"{self.score_name} {mean:.4f} after {len(fold_scores)} fold(s)")

    def _choose_family(self, trial: optuna.Trial, trials: list[FrozenTrial]) -> str:
        names = sorted(self.config.families)
        name = trial.suggest_categorical("family", names) if len(names) > 1 else names[0]
        trial.set_user_attr(FAMILY_ATTR, name)
        cap = self.config.families[name].max_trials
        if cap is not None:
            used = sum(1 for t in trials
                       if t.number != trial.number and t.user_attrs.get(FAMILY_ATTR) == name and counts_toward_budget(t))
            if used >= cap:
                trial.set_user_attr(SKIPPED_ATTR, f"{name} reached max_trials={cap}")
                if all(self.config.families[n].max_trials is not None for n in names) and self._all_capped(trials):
                    trial.study.stop()
                raise optuna.TrialPruned(f"{name} reached max_trials={cap}")
        if self.budget.deadline is None:  # no timeout: no need to read the durations on record
            return name
        trials = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if not self.budget.fits(trials, name):
            reason = f"{name} would not finish in the {self.budget.remaining():.0f} s left of the timeout"
            trial.set_user_attr(SKIPPED_ATTR, reason)
            if not self.budget.any_fits(trials, names):
                trial.study.stop()
            raise optuna.TrialPruned(reason)
        return name

    def _all_capped(self, trials: list[FrozenTrial]) -> bool:
        return all(
            sum(1 for t in trials if t.user_attrs.get(FAMILY_ATTR) == n and counts_toward_budget(t)) >= cfg.max_trials
            for n, cfg in self.config.families.items()
        )

    def _finish(self, trial: optuna.Trial, family: Family, run_id: str | None, state: str,
                curves: dict[str, list[float]], fold_scores: list[float], started: float, value: float | None = None,
                error: str | None = None) -> None:
        duration = time.perf_counter() - started
        trial.set_user_attr(DURATION_ATTR, round(duration, 3))
        scores = {self.score_name: value} if value is not None else {}
        logged = {f"{family.curve_step}/{k}": v for k, v in curves.items()}
        if self.cross_validated:
            trial.set_user_attr(FOLD_SCORES_ATTR, fold_scores)
            logged[f"fold/{self.fold_score_name}"] = fold_scores  # step = fold number (repeats continue the count)
        self.tracker.finish_trial(run_id, state, scores, logged, duration, error=error)
