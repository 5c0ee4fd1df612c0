"""Reusable holdout: Thresholdout (Dwork et al., Science 2015) over a sealed holdout part.

A holdout part that is looked at again and again to choose between models is overfitted like a
validation part. Thresholdout lets it be reused: each query is answered with the training-side
estimate (the trial's `val_`/`cv_` score) unless the holdout score differs from it by more than a
noisy threshold; only then is the holdout score revealed, with Laplace noise, and one unit of the
budget spent. When the budget is spent, no more answers are given. As in the paper: the threshold
T gets noise Lap(2 sigma), redrawn after every revealed answer; each comparison adds Lap(4 sigma);
a revealed answer adds Lap(sigma).

The noise comes from a generator seeded once per study with fresh entropy and advanced
deterministically (one stream per query number), and the state (budget left, queries, noisy
threshold) lives in the study's user attributes, so every process and every rerun continues the
same sequence and a rerun cannot buy fresh noise for free. This module reads holdout rows only;
the test rows stay with `finalize`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import FAMILY_ATTR
from tuner.evaluate import finalize
from tuner.core.config import ThresholdoutConfig
from tuner.data import HOLDOUT, TRAIN
from tuner.core.errors import TunerError
from tuner.core.metrics import METRICS, direction_sign
from tuner.study.sealed import open_sealed

STATE_ATTR = "tuner.thresholdout"


class HoldoutBudgetSpent(TunerError):
    """Thresholdout has revealed the holdout as often as its budget allows."""


class NoHoldoutPart(TunerError):
    """The study was sealed without a holdout part."""


@dataclass
class ThresholdoutState:
    """What must survive between queries; JSON-friendly for Optuna user attributes."""

    budget_left: int
    entropy: int  # seeds the noise; drawn once when the study is first queried
    queries: int = 0
    revealed: int = 0
    noisy_threshold: float | None = None  # T + Lap(2 sigma), redrawn after each revealed answer


@dataclass(frozen=True)
class Answer:
    value: float
    from_holdout: bool  # True: the noised holdout score (one unit of budget spent); False: the train-side estimate


@dataclass
class Thresholdout:
    config: ThresholdoutConfig
    state: ThresholdoutState

    @classmethod
    def start(cls, config: ThresholdoutConfig, entropy: int | None = None) -> Thresholdout:
        entropy = int(np.random.SeedSequence(entropy).entropy)
        return cls(config, ThresholdoutState(budget_left=config.budget, entropy=entropy))

    def check_budget(self) -> None:
        if self.state.budget_left < 1:
            raise HoldoutBudgetSpent(
                f"the reusable holdout's budget is spent ({self.state.revealed} revealed answers of "
                f"{self.config.budget}, {self.state.queries} queries): its scores can no longer be trusted "
                "for selection; use `tuner study finalize` for the one test look")

    def query(self, train_estimate: float, holdout_estimate: float) -> Answer:
        """One Thresholdout answer for a model scored train-side and on the holdout."""
        self.check_budget()
        rng = np.random.default_rng([self.state.entropy, self.state.queries])
        sigma = self.config.sigma
        if self.state.noisy_threshold is None:
            self.state.noisy_threshold = self.config.threshold + float(rng.laplace(0.0, 2 * sigma))
        self.state.queries += 1
        if abs(holdout_estimate - train_estimate) > self.state.noisy_threshold + float(rng.laplace(0.0, 4 * sigma)):
            self.state.budget_left -= 1
            self.state.revealed += 1
            self.state.noisy_threshold = self.config.threshold + float(rng.laplace(0.0, 2 * sigma))
            return Answer(holdout_estimate + float(rng.laplace(0.0, sigma)), from_holdout=True)
        return Answer(train_estimate, from_holdout=False)


@dataclass
class HoldoutRow:
    trial: int
    family: str
    search_score: float
    answer: float | None  # None: not answered, the budget ran out first
    from_holdout: bool = False


@dataclass
class HoldoutReport:
    study: str
    metric: str
    score_name: str  # val_<metric> or cv_<metric>
    rows_holdout: int
    rows: list[HoldoutRow] = field(default_factory=list)
    budget: int = 0
    budget_left: int = 0
    queries: int = 0
    exhausted: bool = False  # the budget ran out before every chosen trial was answered


def load_thresholdout(study: Any, config: ThresholdoutConfig) -> Thresholdout:
    record = study.user_attrs.get(STATE_ATTR)
    if record is None:
        return Thresholdout.start(config)
    return Thresholdout(config, ThresholdoutState(**record))


def choose_trials(study: Any, top: int | None, numbers: list[int] | None) -> list[FrozenTrial]:
    """The trials named by number, or the best `top` complete trials by search score."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if numbers:
        by_number = {t.number: t for t in complete}
        missing = [n for n in numbers if n not in by_number]
        if missing:
            raise TunerError(f"trial(s) {', '.join(map(str, missing))} are not complete trials of study "
                             f"{study.study_name!r}; see `tuner study show {study.study_name}`")
        return [by_number[n] for n in dict.fromkeys(numbers)]
    sign = direction_sign(study.direction)
    return sorted(complete, key=lambda t: -sign * t.value)[:top or 3]


def query_holdout(name: str, storage_url: str | None = None, top: int | None = None,
                  numbers: list[int] | None = None, study_file: str | None = None) -> HoldoutReport:
    """`tuner study holdout`: each chosen configuration refitted train-side, answered through Thresholdout.

    A holdout study's val score came from a model fitted on the training rows, so the model the
    holdout scores is fitted on those rows too; a K-fold study's cv score speaks for every search row.
    """
    sealed = open_sealed(name, storage_url, study_file)
    config = sealed.config.split.reusable_holdout
    holdout_rows = sealed.split.rows(HOLDOUT)
    if config is None or not len(holdout_rows):
        raise NoHoldoutPart(f"study {name!r} has no holdout part; a new study with `split: {{holdout_fraction: 0.15}}` "
                            "gets one")
    if sealed.metric not in METRICS:
        raise TunerError(f"study {name!r} is scored by the custom monitor {sealed.metric!r}; the holdout needs a study `metric:`")
    study = sealed.study
    thresholdout = load_thresholdout(study, config)
    thresholdout.check_budget()  # before any refit
    trials = choose_trials(study, top, numbers)
    if not trials:
        raise TunerError(f"study {name!r} has no complete trial; run `tuner study run` first")
    metric = METRICS[sealed.metric]
    fit_rows = sealed.split.search_rows() if sealed.split.folds is not None else sealed.split.rows(TRAIN)
    report = HoldoutReport(name, sealed.metric, sealed.score_name, len(holdout_rows), budget=config.budget)
    for trial, y, predictions in finalize.refit_predictions(sealed, trials, fit_rows, holdout_rows, "holdout"):
        answer = thresholdout.query(trial.value, metric.score(y, predictions))
        study.set_user_attr(STATE_ATTR, asdict(thresholdout.state))  # saved per query: an interrupted run still counts
        report.rows.append(HoldoutRow(trial.number, trial.user_attrs[FAMILY_ATTR], trial.value, answer.value,
                                      answer.from_holdout))
        if thresholdout.state.budget_left < 1:
            break
    for trial in trials[len(report.rows):]:
        report.exhausted = True
        report.rows.append(HoldoutRow(trial.number, trial.user_attrs[FAMILY_ATTR], trial.value, None))
    report.budget_left, report.queries = thresholdout.state.budget_left, thresholdout.state.queries
    return report
