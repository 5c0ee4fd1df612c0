"""Running a study: the trial loop, the budget guard, `--jobs` worker processes and the parent run.

`run_study` opens (or creates) the sealed study and its MLflow parent run, searches until the
study holds its budget of trials (whichever worker or machine runs them), then tells its
subscribers that the run ended and closes the parent run. Each trial's own child run is the
objective's (tuner.search.objective); the dashboard listens as a subscriber (tuner.pipeline.study_run).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import ERROR_ATTR, FAMILY_ATTR, INTERRUPTED_ATTR, REQUEUED_FROM_ATTR, SKIPPED_ATTR, WORKER_ATTR
from tuner.study.trial_bags import TrialBags, artifact_root
from tuner.search.time_budget import TimeBudget, enqueue_portfolio, queue_portfolio_once
from tuner.core.config import MAX_TRIALS, load_study_file
from tuner.data import TRAIN, VALID, Dataset, prepare_parts
from tuner.core.devices import configure_mixed_precision, device_tags
from tuner.core.errors import TunerError
from tuner.core.threads import fold_worker_count, keep_to_share
from tuner.models import FAMILIES, ProblemSpec
from tuner.search.objective import Fold, Objective, TrialFailed, counts_toward_budget
from tuner.study.sealed import ATTR, SealedStudy, load_inputs, open_study, stored_score_name
from tuner.search.samplers import make_pruner, make_sampler
from tuner.study.storage import (
    GRACE_BEATS, StaleTrials, claim_study_attr, fail_stale, heartbeat_of, normalize_url, open_storage, resolve_storage_url,
)
from tuner.study.catalog import best_among, best_of
from tuner.tracking import DESCRIPTION, Tracker, check_server, resolve_tracking_uri
from tuner.search.workers import (
    ReseedOnJoin, interrupt_on_signals, other_worker_at_work, parent_run_status, sampler_seed, waiting_line, worker_label,
    worker_tags,
)

log = logging.getLogger("tuner")


@dataclass
class Progress:
    """What a live display needs after each trial."""

    done: int
    total: int
    best: float | None
    best_family: str | None
    running: int = 0
    score_name: str = ""  # what `best` is, with its split: val_<metric> or cv_<metric>


@dataclass
class RunResult:
    study_name: str
    metric: str
    direction: str
    trials_before: int
    counts: dict[str, int] = field(default_factory=dict)  # the study's trials by state, every worker's
    ran: int = 0  # trials this process or its --jobs workers ran: other workers on the study add to counts only
    best_value: float | None = None
    best_trial: int | None = None
    best_family: str | None = None
    elapsed_s: float = 0.0
    tracking_degraded: bool = False
    first_error: str | None = None
    family_failures: list[str] = field(default_factory=list)  # a line per family none of whose trials got through
    score_name: str = ""  # val_<metric> or cv_<metric>


@dataclass
class RunEnded:
    """What `run_study` tells its subscribers when the search stops, before it closes the parent run."""

    sealed: SealedStudy
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    status: str  # FINISHED, or KILLED when an exception (Ctrl-C, SIGTERM included) stopped the search
    result: RunResult


def progress_of(study: optuna.Study, total: int, trials: list[FrozenTrial] | None = None,
                score_name: str | None = None) -> Progress:
    """`trials` and `score_name`, when the caller already read them, save the storage queries."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    counted = [t for t in trials if counts_toward_budget(t)]
    done = sum(1 for t in counted if t.state != TrialState.RUNNING)
    best = best_among(trials, study.direction)
    return Progress(done, total, best.value if best else None, best.user_attrs.get(FAMILY_ATTR) if best else None,
                    len(counted) - done, score_name or stored_score_name(study.user_attrs))


def run_study(study_file: str | Path, storage_url: str | None = None, tracking_uri: str | None = None,
              trials: int | None = None, timeout: float | None = None, jobs: int = 1,
              on_progress: Callable[[Progress], None] | None = None,
              subscribers: Sequence[Callable[[RunEnded], None]] = (), deadline: float | None = None,
              inputs: tuple[Dataset, str] | None = None, budget_s: float | None = None,
              grace_s: float = 0.0) -> RunResult:
    """Launch or resume a study until it holds `trials` trials (the budget is the study's total).

    `on_progress` hears after each trial; each of `subscribers` hears once when the search stops,
    before the parent run is closed (`tuner.pipeline.study_run.run_study` subscribes the dashboard).
    `deadline` (a `time.monotonic()` value) ends the search at that moment, however long opening
    the stores took (`run-all --budget`); `inputs` are `load_inputs`' result when already loaded.
    `budget_s`, the whole run's time budget (`run-all --budget`), is what tuner picks families for
    when the study file names none (default: the search's own time). `grace_s`: seconds past the
    deadline a trial that leads the study may take to finish (`run-all` lends its refit's share).
    """
    config, base_dir = load_study_file(study_file)
    if trials is not None and not 0 < trials <= MAX_TRIALS:  # the study file's own bound, before any store
        raise TunerError(f"--trials {trials} is out of range: a study holds 1 to {MAX_TRIALS:,} trials (more is a "
                         "typo, an extra zero or two); give a smaller --trials")
    budget = trials or config.budget.trials
    timeout = timeout or config.budget.timeout
    # refusals that need no store first, then the remote ones, so a bad input creates no local file
    inputs = inputs or load_inputs(config, base_dir)
    storage_url = normalize_url(resolve_storage_url(storage_url))
    check_server(resolve_tracking_uri(tracking_uri))
    storage = open_storage(storage_url)
    tracker = Tracker(tracking_uri)
    tracker.check()
    seconds = budget_s or (timeout if deadline is None else deadline - time.monotonic())
    sealed = open_study(config, base_dir, storage_url, inputs=inputs, storage=storage, seconds=seconds)
    experiment_id = tracker.experiment_id(config.name)
    parent_run_id = _open_parent_run(tracker, sealed, experiment_id, Path(study_file))
    started = time.perf_counter()
    before = progress_of(sealed.study, budget).done
    first, ran_by = len(sealed.study.get_trials(deepcopy=False)), {worker_label()}
    status = "FINISHED"
    if deadline is not None:
        timeout = max(deadline - time.monotonic(), 0.01)
    try:
        if jobs <= 1:
            _optimize(sealed, tracker, experiment_id, parent_run_id, budget, timeout, worker=0, on_progress=on_progress,
                      fold_workers=fold_worker_count(), grace_s=grace_s)
        else:
            _run_workers(sealed, Path(study_file), tracker.uri, budget, timeout, jobs, on_progress, ran_by, grace_s)
    except BaseException:
        status = "KILLED"
        raise
    finally:
        result = summarize_run(sealed, budget, before, time.perf_counter() - started, ran_by, first)
        ended = RunEnded(sealed, tracker, experiment_id, parent_run_id, status, result)
        for subscriber in subscribers:
            _tell(subscriber, ended)
        result.tracking_degraded = tracker.degraded
        tracker.finish_study(parent_run_id, _study_metrics(result), _study_tags(sealed, result),
                             status=parent_run_status(sealed.study, status))
    return result


def _tell(subscriber: Callable[[RunEnded], None], ended: RunEnded) -> None:
    """A subscriber that raises is logged, not raised: the trials are already safe in Optuna."""
    try:
        subscriber(ended)
    except Exception as exc:
        log.warning("%s failed after the study's run (%s)", getattr(subscriber, "__name__", subscriber),
                    (str(exc).splitlines() or [type(exc).__name__])[0][:200])


def _open_parent_run(tracker: Tracker, sealed: SealedStudy, experiment_id: str, study_file: Path) -> str:
    config = sealed.config
    uses_tensorflow = any(FAMILIES[n].uses_tensorflow for n in config.families)
    params = {
        "data": config.data.source, "task": sealed.task, "metric": sealed.metric,
        "direction": sealed.study.direction.name.lower(), "families": ",".join(sorted(config.families)),
        "sampler": config.sampler.name, "pruner": config.pruner.name, "seed": config.split.seed,
        "fingerprint": sealed.split.fingerprint, "split_digest": sealed.split.digest,
        **{f"rows_{k}": v for k, v in sealed.split.counts().items()},
    }
    if config.split.cross_validated:
        params.update(cv_folds=config.split.folds, cv_repeats=config.split.repeats)
    tags = {DESCRIPTION: config.description or f"tuner study {config.name}",
            **device_tags(uses_tensorflow)}
    return tracker.open_study_run(experiment_id, sealed.study.user_attrs[ATTR + "uid"], config.name, tags, params,
                                  {"study.yaml": study_file.read_text()}, claim=parent_run_claim(sealed, tracker, experiment_id))


def parent_run_claim(sealed: SealedStudy, tracker: Tracker, experiment_id: str) -> Callable[[str], str]:
    """The study's one parent run in this tracking store, recorded once in the Optuna storage:
    workers that start together all keep the first one recorded."""
    store = hashlib.sha256(f"{tracker.uri} {experiment_id}".encode()).hexdigest()[:12]
    return lambda run_id: claim_study_attr(sealed.study, f"{ATTR}parent_run.{store}", run_id)


def _optimize(sealed: SealedStudy, tracker: Tracker, experiment_id: str, parent_run_id: str, budget: int,
              timeout: float | None, worker: int, on_progress: Callable[[Progress], None] | None,
              fold_workers: int, grace_s: float = 0.0) -> None:
    """Search in this process; `fold_workers` folds of a trial are fitted at once (its share of the cores)."""
    config = sealed.config
    study = sealed.study
    close_lost_runs(study, tracker, experiment_id, parent_run_id)
    if progress_of(study, budget).done >= budget:
        return
    folds = search_folds(sealed)
    uses_tensorflow = any(FAMILIES[n].uses_tensorflow for n in config.families)
    if uses_tensorflow:
        configure_mixed_precision(config.budget.mixed_precision)
    objective = Objective(config, folds, tracker, experiment_id, parent_run_id,
                          {**{k: v for k, v in device_tags(uses_tensorflow).items() if not k.startswith("version.")},
                           **worker_tags(worker), "split_digest": sealed.split.digest},  # the split it verified
                          budget=TimeBudget.from_timeout(timeout, grace_s), bags=trial_bags(sealed),
                          search_rows=sealed.split.search_rows(), fold_workers=fold_workers)
    queue_portfolio_once(study, worker_label(), lambda: enqueue_portfolio(
        study, list(config.families), budget, folds[0].spec,
        caps={name: options.max_trials for name, options in config.families.items()}))
    first = len(study.trials)
    shared = other_worker_at_work(study.get_trials(deepcopy=False), first)
    study.sampler = make_sampler(config.sampler, sampler_seed(config, first, worker, shared))
    study.pruner = make_pruner(config.pruner, folds=len(folds) if config.split.cross_validated else None)
    if config.sampler.seed is not None and not shared:
        objective = ReseedOnJoin(objective, config, first, worker)
    _search(study, objective, budget, timeout, on_progress)


WAIT_POLL_S = 1.0  # how often a worker waiting on another's trials looks again: they end long before a heartbeat expires


class BudgetGuard:
    """Refuses, at its start, a trial beyond the study's budget, whichever worker or machine runs it.

    The storage hands out trial numbers atomically, so counting the trials numbered before this
    one that spend the budget (finished, running, or queued for a re-run) gives every worker the
    same answer. A refused trial is marked `skipped` and does not count. An interrupted trial
    (Ctrl-C, SIGTERM) is marked and queued again with the same params, so a resume re-runs it.
    """

    def __init__(self, objective: Callable[[optuna.Trial, list[FrozenTrial]], float], budget: int) -> None:
        self.objective = objective
        self.budget = budget
        self.refused = False
        self.seen: list[FrozenTrial] | None = None  # the study's trials as read at the last trial's start

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_label())
        trials = self.seen = trial.study.get_trials(deepcopy=False)  # the trial's one read, handed on
        earlier = sum(1 for t in trials if t.number < trial.number and (counts_toward_budget(t) or _queued(t)))
        if earlier >= self.budget:
            trial.set_user_attr(SKIPPED_ATTR, f"the budget of {self.budget} trials is spent")
            self.refused = True
            trial.study.stop()
            raise optuna.TrialPruned(f"the budget of {self.budget} trials is spent")
        try:
            return self.objective(trial, trials)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, f"stopped by a signal in {worker_label()}; queued again")
            trial.study.enqueue_trial(trial.params, user_attrs={REQUEUED_FROM_ATTR: trial.number})
            raise

    def after(self, finished: FrozenTrial) -> list[FrozenTrial] | None:
        """The trials read at `finished`'s start with `finished` in its final state: the progress
        after it without another read (other workers' trials since then show at the next one)."""
        if self.seen is None or not any(t.number == finished.number for t in self.seen):
            return None
        return [finished if t.number == finished.number else t for t in self.seen]


def _queued(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.WAITING and not trial.user_attrs.get(SKIPPED_ATTR)


def _search(study: optuna.Study, objective: Callable[..., float], budget: int, timeout: float | None,
            on_progress: Callable[[Progress], None] | None) -> None:
    """Run trials until the study holds exactly `budget` counted trials, or the timeout.

    A worker that finds the rest of the budget running elsewhere waits for it: if that worker dies,
    the heartbeat fails its trial and this worker runs the re-queued copy (same params).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    guard = BudgetGuard(objective, budget)
    interval = heartbeat_of(study)
    score_name = stored_score_name(study.user_attrs)
    said: str | None = None  # the waiting line last printed

    def report(study: optuna.Study, finished: FrozenTrial) -> None:
        trials = guard.after(finished) or study.get_trials(deepcopy=False)
        progress = progress_of(study, budget, trials, score_name)
        if on_progress is not None:
            on_progress(progress)
        if progress.done + progress.running >= budget and not any(map(_queued, trials)):
            guard.refused = True
            study.stop()

    while deadline is None or time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        progress = progress_of(study, budget, trials, score_name)
        queued = any(map(_queued, trials))
        if progress.done >= budget:
            return
        if progress.done + progress.running < budget or queued:
            guard.refused = False
            study.optimize(guard, timeout=None if deadline is None else max(deadline - time.monotonic(), 0.01),
                           callbacks=[report], catch=(TrialFailed,), gc_after_trial=False)
            if not guard.refused:  # stopped for another reason: timeout, or every family reached its cap
                return
            continue
        if interval is None:  # no heartbeats (journal): a lost worker's trial cannot be detected
            return
        if on_progress is not None:
            on_progress(progress)
        if (line := waiting_line(trials, interval * GRACE_BEATS)) != said:
            said = line
            if line:
                log.warning(line)
        time.sleep(min(WAIT_POLL_S, interval, max(deadline - time.monotonic(), 0)) if deadline
                   else min(WAIT_POLL_S, interval))
        fail_stale(study)


def close_lost_runs(study: optuna.Study, tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    """Fail the trials of dead workers now and from now on close their MLflow runs, not leave them RUNNING.

    Called when a worker starts: it also closes runs a crashed worker left open on finished trials.
    """
    handler = getattr(study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if isinstance(handler, StaleTrials):
        handler.hooks = [lambda trial: tracker.close_lost_trial_runs(experiment_id, parent_run_id,
                                                                     {trial.number: "KILLED"})]
    fail_stale(study)
    finished = {t.number: _run_status(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    tracker.close_lost_trial_runs(experiment_id, parent_run_id, finished)


def _run_status(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL:
        return "FAILED" if ERROR_ATTR in trial.user_attrs else "KILLED"
    return "FINISHED"


def trial_bags(sealed: SealedStudy) -> TrialBags | None:
    """The store of a K-fold study's bagged trials (out-of-fold predictions, fold models); None otherwise."""
    return TrialBags(artifact_root(sealed.storage_url)) if sealed.config.split.cross_validated else None


def search_folds(sealed: SealedStudy) -> list[Fold]:
    """The (train, validation) parts the objective scores: one pair, or one per fold and repeat.

    Preprocessing and the target encoder are fitted on each fold's training rows only.
    """
    split = sealed.split
    pairs = split.fold_rows() or [(split.rows(TRAIN), split.rows(VALID))]
    folds = []
    for train_rows, val_rows in pairs:
        train, parts, _, encoder = prepare_parts(sealed.dataset, sealed.task, train_rows, {"val": val_rows})
        spec = sealed.problem_spec(**ProblemSpec.data_fields(train, encoder))
        folds.append(Fold(train, parts["val"], spec))
    return folds


def _worker_main(study_file: str, storage_url: str, tracking_uri: str, budget: int, ends_at: float | None,
                 worker: int, jobs: int, grace_s: float = 0.0) -> None:
    """Entry point of a `--jobs` worker process: reopen the same sealed study and search on its share
    of the cores until `ends_at` (a `time.time()` value: its own start-up is not added to the budget)."""
    pinned = keep_to_share(worker - 1, jobs)
    interrupt_on_signals()
    config, base_dir = load_study_file(study_file)
    tracker = Tracker(tracking_uri)
    sealed = open_study(config, base_dir, storage_url, create=False)
    experiment_id = tracker.experiment_id(config.name)
    parent = tracker.open_study_run(experiment_id, sealed.study.user_attrs[ATTR + "uid"], config.name, {}, {}, {},
                                    claim=parent_run_claim(sealed, tracker, experiment_id))
    timeout = None if ends_at is None else max(ends_at - time.time(), 0.01)
    try:
        _optimize(sealed, tracker, experiment_id, parent, budget, timeout, worker, on_progress=None,
                  fold_workers=fold_worker_count(1 if pinned else jobs), grace_s=grace_s)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # every trial is committed: the search's parent waits on no teardown (TensorFlow's: seconds)


def _run_workers(sealed: SealedStudy, study_file: Path, tracking_uri: str, budget: int, timeout: float | None,
                 jobs: int, on_progress: Callable[[Progress], None] | None, labels: set[str],
                 grace_s: float = 0.0) -> None:
    """`--jobs N`: N processes on the same storage (TensorFlow state is per process, not per thread),
    each pinned to its share of the cores; each one's worker label goes into `labels`, so the run
    counts their trials as its own."""
    context = multiprocessing.get_context("spawn")
    ends_at = None if timeout is None else time.time() + timeout
    workers = [context.Process(target=_worker_main, args=(str(study_file), sealed.storage_url, tracking_uri,
                                                            budget, ends_at, i + 1, jobs, grace_s), daemon=False)
               for i in range(jobs)]
    for process in workers:
        process.start()
        labels.add(worker_label(process.pid))
    try:
        while any(p.is_alive() for p in workers):
            if on_progress is not None:
                on_progress(progress_of(sealed.study, budget))
            time.sleep(1.0)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
            process.join()
    failed = [p.exitcode for p in workers if p.exitcode not in (0, None)]
    if failed:
        raise TunerError(f"{len(failed)} of {jobs} workers exited with an error (codes {failed}); see their output above")


def summarize_run(sealed: SealedStudy, budget: int, before: int, elapsed: float, ran_by: Collection[str] = (),
                  first: int = 0) -> RunResult:
    """The study's trials by state and its best; `ran` counts those numbered from `first` whose
    worker is one of `ran_by` (this run's processes), not another worker's on the same study."""
    study = sealed.study
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SKIPPED_ATTR)]
    result = RunResult(sealed.config.name, sealed.metric, study.direction.name.lower(), before, elapsed_s=elapsed,
                       score_name=sealed.score_name)
    first_errors: dict[str, str] = {}  # family -> its first trial's error
    through: set[str] = set()  # families with a trial that completed or was pruned
    for t in trials:
        result.counts[t.state.name] = result.counts.get(t.state.name, 0) + 1
        result.ran += int(t.number >= first and t.user_attrs.get(WORKER_ATTR) in ran_by)
        if t.state == TrialState.FAIL and result.first_error is None:
            result.first_error = t.user_attrs.get(ERROR_ATTR)
        family = t.user_attrs.get(FAMILY_ATTR)
        if t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs:
            first_errors.setdefault(family, t.user_attrs[ERROR_ATTR])
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            through.add(family)
    result.family_failures = [FAMILIES[name].every_trial_failed(sealed.config, error)
                              for name, error in sorted(first_errors.items()) if name in FAMILIES and name not in through]
    result.best_value, result.best_family = best_of(study)
    if result.best_value is not None:
        result.best_trial = study.best_trial.number
    return result


def _study_metrics(result: RunResult) -> dict[str, float]:
    metrics = {f"trials_{state.lower()}": n for state, n in result.counts.items()}
    if result.best_value is not None:
        metrics[f"best_{result.score_name}"] = result.best_value
    return metrics


def _study_tags(sealed: SealedStudy, result: RunResult) -> dict[str, str]:
    tags = {"best_family": result.best_family or "none"}
    if result.best_trial is not None:
        tags["best_trial"] = str(result.best_trial)
    return tags
