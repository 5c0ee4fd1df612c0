"""Spending a time budget well: the portfolio tried first (tuner.models.portfolio), and no trial started
that its family's own record says cannot finish before the deadline.

Optuna's `timeout` only stops *starting* trials; a 40-second network begun at second 55 of a
60-second budget still runs to second 95. `TimeBudget` refuses such a start (the trial is recorded
as skipped and does not count toward `trials`) and stops the study once no family fits. A family's
first trial has no record to judge by, so inside a trial the deadline is also in force: Keras and
XGBoost fits stop at the epoch or round that crosses it and
keep their best step so far, like early stopping (`tuner.core.deadline`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.storage import claim_study_attr
from tuner.study.trial_attrs import DURATION_ATTR, FAMILY_ATTR, PORTFOLIO_ATTR
from tuner.models import ProblemSpec
from tuner.models.portfolio import portfolio_queue

MIN_RECORD = 1  # finished trials of a family before its duration is trusted
PORTFOLIO_BY = "tuner.portfolio_by"  # study attribute: the worker that queued the portfolio
PORTFOLIO_QUEUED = "tuner.portfolio_queued"  # study attribute: set once it is queued


def enqueue_portfolio(study: optuna.Study, families: list[str], trials: int, spec: ProblemSpec,
                      caps: dict[str, int | None] | None = None) -> None:
    """On a new study, queue the portfolio (at most `trials`, at most each family's `caps`): each
    family's library default, then the configurations the peers found strong across many tables,
    every family's first before any family's second, cheapest family first.

    The first seconds of any budget then hold what a user would get from the defaults, every family
    has a duration on record early (what `TimeBudget` judges the rest by: a family that cannot finish
    in time has its queued configurations skipped), and the sampler starts from sound points.
    Each queued trial records its configuration's source (`PORTFOLIO_ATTR`).
    """
    if study.trials:
        return
    for queued in portfolio_queue(families, spec, trials, caps):
        name = queued.family
        study.enqueue_trial({"family": name, **{f"{name}.{key}": value for key, value in queued.params.items()}},
                            user_attrs={PORTFOLIO_ATTR: queued.label}, skip_if_exists=True)


PORTFOLIO_WAIT_S = 10.0  # how long a worker waits for another to queue the portfolio before it searches


def queue_portfolio_once(study: optuna.Study, me: str, enqueue: Callable[[], None]) -> None:
    """One worker queues a new study's portfolio (the storage's first writer); workers that start
    with it wait until it is queued, so that none begins with a sampled trial in its place and no
    configuration is queued twice. `me`: this worker's label."""
    if claim_study_attr(study, PORTFOLIO_BY, me) == me:
        enqueue()
        study.set_user_attr(PORTFOLIO_QUEUED, True)
        return
    waited_until = time.monotonic() + PORTFOLIO_WAIT_S
    while time.monotonic() < waited_until and not study.user_attrs.get(PORTFOLIO_QUEUED):
        time.sleep(0.1)


@dataclass
class TimeBudget:
    deadline: float | None  # time.monotonic() value; None: no time limit
    grace_s: float = 0.0  # seconds past the deadline a trial that leads the study may take to finish

    @classmethod
    def from_timeout(cls, timeout: float | None, grace_s: float = 0.0) -> TimeBudget:
        return cls(time.monotonic() + timeout if timeout else None, grace_s if timeout else 0.0)

    def deadline_for(self, leading: bool) -> float | None:
        """When a trial's fits must stop: the deadline, or with its grace for a trial that leads."""
        return None if self.deadline is None else self.deadline + (self.grace_s if leading else 0.0)

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def expected_seconds(self, trials: list[FrozenTrial], family: str) -> float | None:
        """Median duration of this family's finished trials (pruned ones included: they cost time too)."""
        durations = [t.user_attrs[DURATION_ATTR] for t in trials
                     if t.user_attrs.get(FAMILY_ATTR) == family and DURATION_ATTR in t.user_attrs
                     and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        return statistics.median(durations) if len(durations) >= MIN_RECORD else None

    def fits(self, trials: list[FrozenTrial], family: str) -> bool:
        expected = self.expected_seconds(trials, family)
        return expected is None or expected <= self.remaining()

    def any_fits(self, trials: list[FrozenTrial], families: list[str]) -> bool:
        return any(self.fits(trials, name) for name in families)
