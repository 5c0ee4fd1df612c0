"""Opening, sealing and running studies on Optuna storage; the one module that touches storage.

Everything that can be refused (study file, data, storage URL, a study of the same name with
another definition, changed data) is checked before anything is written, so a bad input leaves
no half-made study and no orphan MLflow run.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import re
import signal
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.bags import TrialBags, artifact_root
from tuner.budget import TimeBudget, enqueue_portfolio
from tuner.config import StudyConfig, load_study_file
from tuner.data import TRAIN, VALID, Dataset, SealedSplit, check_task, infer_task, load_dataset, make_split, prepare_parts
from tuner.data.preprocess import probe_shapes
from tuner.errors import SplitMismatchError, StorageError, StudyFileError, TunerError
from tuner.models import FAMILIES, ProblemSpec
from tuner.objective import Fold, Objective, TrialFailed, counts_toward_budget
from tuner.search import make_pruner, make_sampler
from tuner.tracking import DESCRIPTION, Tracker, check_server, resolve_tracking_uri

DEFAULT_STORAGE = "sqlite:///studies/optuna.db"
HEARTBEAT_S = 30
HEARTBEAT_ENV = "TUNER_HEARTBEAT_S"
ATTR = "tuner."  # prefix of the study attributes tuner owns

optuna.logging.set_verbosity(optuna.logging.WARNING)


def resolve_storage_url(url: str | None = None) -> str:
    return url or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats ($TUNER_HEARTBEAT_S, tests use 1-2 s)."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return HEARTBEAT_S
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(f"{HEARTBEAT_ENV}={raw!r} must be a whole number of seconds, at least 1")
    return value


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """Optuna storage with heartbeats (RDB) or a journal file; a bad or unsafe URL is one clear line.

    Several processes may open a fresh storage at the same moment: the schema is created by the
    first and the others retry, so no worker dies of a creation race.
    """
    url = _normalize_url(resolve_storage_url(url))
    if url.startswith("journal:///"):
        if HEARTBEAT_ENV in os.environ:
            raise StorageError(
                f"{HEARTBEAT_ENV} asks for heartbeats, which the journal storage cannot keep (a killed worker's trial "
                "would stay RUNNING); use sqlite:///PATH on one machine or postgresql+psycopg://USER@HOST/DB")
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
        _prepare_sqlite(Path(url.removeprefix("sqlite:///")))
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    interval = heartbeat_interval()
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=interval * 4,
                heartbeat_stale_trial_callback=StaleTrials(),
            )
        except Exception as exc:  # SQLAlchemy raises ArgumentError, OperationalError, NoSuchModuleError...
            if _is_creation_race(exc) and attempt < 7:
                time.sleep(0.1 * 2 ** attempt + random.random() * 0.2)
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = re.sub(r"^\([\w.]+\) ", "", first)[:240]  # SQLAlchemy's "(psycopg.OperationalError) " prefix
            raise StorageError(f"storage {redact_url(url)} cannot be opened ({first}); check --storage") from None
    raise AssertionError("unreachable")


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs", "ceph",
                       "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "davfs", "fuse.s3fs"}


def _normalize_url(url: str) -> str:
    """Refuse what SQLAlchemy would reject obscurely; `postgresql://` means the installed psycopg 3 driver."""
    if url.startswith("journal:///"):
        return url
    if "://" not in url:
        raise StorageError(f"storage {url!r} is not a URL; use sqlite:///PATH, postgresql+psycopg://USER@HOST/DB "
                           "or journal:///PATH")
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme.split("+", 1)[0] not in STORAGE_SCHEMES:
        raise StorageError(f"storage URL scheme {scheme!r} is not supported; use sqlite:///PATH (one machine), "
                           "postgresql+psycopg://USER:PASSWORD@HOST/DB (several machines) or journal:///PATH")
    return url


def _prepare_sqlite(path: Path) -> None:
    """WAL and a busy timeout let local workers read while one writes; a network disk cannot lock SQLite safely."""
    if str(path) == ":memory:":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    filesystem = filesystem_type(path.parent)
    if filesystem in NETWORK_FILESYSTEMS:
        raise StorageError(
            f"SQLite storage {path} is on a network filesystem ({filesystem}), where its locks are unsafe for "
            "several workers; use postgresql+psycopg://USER@HOST/DB or journal:///PATH")
    import sqlite3

    connection = sqlite3.connect(path, timeout=60)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type holding `path`, from /proc/mounts (longest mount point that contains it)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _is_creation_race(exc: Exception) -> bool:
    """Errors of two processes creating the same schema at once (PostgreSQL catalog, SQLite lock)."""
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "database is locked", "deadlock detected",
                                   "unique constraint failed"))


class StaleTrials:
    """Heartbeat-stale trial handler: re-queue it with the same params, then tell the hooks (MLflow).

    Optuna calls it in the worker that notices the stale trial, once per trial.
    """

    def __init__(self, max_retry: int = 2) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.hooks: list[Callable[[FrozenTrial], None]] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        for hook in self.hooks:
            hook(trial)


def redact_url(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


@dataclass
class SealedStudy:
    """A study with its data, inferred task and verified split: what every command works from."""

    config: StudyConfig
    dataset: Dataset
    task: str
    split: SealedSplit
    study: optuna.Study
    storage_url: str

    @property
    def metric(self) -> str:
        """What the study optimises: a metric name, or a custom model's monitored key."""
        return self.config.objective_name(self.task)

    @property
    def score_name(self) -> str:
        """The search score with its split: `val_<metric>` or `cv_<metric>` (mean over folds)."""
        return self.config.split.score_prefix() + self.metric

    def problem_spec(self, n_classes: int, n_features: int, image_shape: tuple | None, **inputs: Any) -> ProblemSpec:
        """`inputs` are the preprocessor's input shapes (FeaturePreprocessor.input_shapes)."""
        return problem_spec(self.config, self.task, n_classes, n_features, image_shape=image_shape, **inputs)


def problem_spec(config: StudyConfig, task: str, n_classes: int, n_features: int, **inputs: Any) -> ProblemSpec:
    budget = config.budget
    custom = config.families.get("custom")
    return ProblemSpec(task=task, metric=config.resolved_metric(task), n_classes=n_classes, n_features=n_features,
                       max_epochs=budget.epochs, max_rounds=budget.rounds, patience=budget.patience,
                       seed=config.split.seed, batch_size=budget.batch_size, reduce_lr=budget.reduce_lr,
                       custom_builder=custom.builder if custom else None, custom_monitor=config.custom_monitor,
                       custom_direction=config.objective_direction(task), **inputs)


def load_inputs(config: StudyConfig, base_dir: Path) -> tuple[Dataset, str]:
    """Check each family's packages are installed, load and check the data, infer the task and
    check each family can fit it: everything refused before a store is touched."""
    for name in config.families:
        package = FAMILIES[name].missing_package()
        if package:
            raise StudyFileError(f"family {name!r} needs the {package} package: pip install {package} "
                                 "(or drop the family from `families:`)")
    dataset = load_dataset(config.data.source, config.data.target, base_dir, kind=config.data.kind)
    task = config.task or infer_task(dataset.y)
    check_task(dataset.y, task, config.data.source)
    config.resolved_metric(task)
    if "custom" in config.families:
        from tuner.models.custom import resolve_builder

        resolve_builder(config.families["custom"].builder, base_dir)
    probe = problem_spec(config, task, n_classes=0, n_features=0, **probe_shapes(dataset.X, dataset.kind))
    for name in config.families:
        reason = FAMILIES[name].unsupported_reason(probe)
        if reason:
            raise StudyFileError(f"family {name!r} cannot search {config.data.source}: {reason}")
    return dataset, task


def open_study(config: StudyConfig, base_dir: Path, storage_url: str | None = None, create: bool = True,
               inputs: tuple[Dataset, str] | None = None,
               storage: optuna.storages.BaseStorage | None = None) -> SealedStudy:
    """Load the study of this name, or create it and seal its split; refuse any mismatch.

    `inputs` (from `load_inputs`) and `storage` (opened on `storage_url`) spare loading them twice.
    When several workers start at once, the one whose `create_study` succeeds seals the split;
    the others wait for its record, so all of them search the same split.
    """
    dataset, task = inputs or load_inputs(config, base_dir)
    storage_url = _normalize_url(resolve_storage_url(storage_url))
    storage = storage or open_storage(storage_url)
    direction = config.objective_direction(task)
    existing = _find_study(storage, config.name)
    if existing is None and create:
        try:
            created = optuna.create_study(storage=storage, study_name=config.name, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            existing = _wait_for_seal(storage, config.name)
        else:
            return _seal(config, base_dir, dataset, task, created, storage_url)
    if existing is None:
        raise StudyFileError(f"no study named {config.name!r} in {redact_url(storage_url)}; run `tuner study run` first")
    if ATTR + "split" not in existing.user_attrs and not existing.trials:
        existing = _wait_for_seal(storage, config.name)  # created a moment ago by another worker
    attrs = existing.user_attrs
    if ATTR + "split" not in attrs:
        if existing.trials:
            raise StudyFileError(f"study {config.name!r} exists but was not made by tuner; use another name")
        return _seal(config, base_dir, dataset, task, existing, storage_url)  # its creator died before sealing
    if attrs.get(ATTR + "identity") != config.identity_hash():
        raise StudyFileError(
            f"study {config.name!r} already exists with a different definition (data, split, families or "
            f"search settings changed); give the study a new name or `tuner study delete {config.name}`"
        )
    split = SealedSplit.from_record(attrs[ATTR + "split"])
    split.verify(dataset.fingerprint)
    return SealedStudy(config, dataset, task, split, existing, storage_url)


def _seal(config: StudyConfig, base_dir: Path, dataset: Dataset, task: str, study: optuna.Study,
          storage_url: str) -> SealedStudy:
    """Write the study's definition and split record; the split goes last, as the 'sealed' mark."""
    split = make_split(dataset.y, task, config.split.test_fraction, config.split.validation_share,
                       config.split.seed, dataset.fingerprint, folds=config.split.folds,
                       repeats=config.split.repeats, holdout_fraction=config.split.holdout_fraction)
    for key, value in {
        "identity": config.identity_hash(), "config": config.model_dump(mode="json"), "task": task,
        "metric": config.objective_name(task), "score_name": config.split.score_prefix() + config.objective_name(task),
        "uid": uuid.uuid4().hex, "base_dir": str(base_dir), "split": split.to_record(),
    }.items():
        study.set_user_attr(ATTR + key, value)
    return SealedStudy(config, dataset, task, split, study, storage_url)


def _wait_for_seal(storage: optuna.storages.BaseStorage, name: str, patience_s: float = 60.0) -> optuna.Study:
    """Another worker created the study a moment ago: wait until its split record is written."""
    deadline = time.monotonic() + patience_s
    while True:
        study = optuna.load_study(study_name=name, storage=storage)
        if ATTR + "split" in study.user_attrs or time.monotonic() > deadline:
            return study
        time.sleep(0.2)


def _find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


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
    counts: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    best_family: str | None = None
    elapsed_s: float = 0.0
    tracking_degraded: bool = False
    first_error: str | None = None
    score_name: str = ""  # val_<metric> or cv_<metric>


def progress_of(study: optuna.Study, total: int) -> Progress:
    counted = [t for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]
    done = sum(1 for t in counted if t.state != TrialState.RUNNING)
    best, family = _best_of(study)
    return Progress(done, total, best, family, len(counted) - done, stored_score_name(study.user_attrs))


def run_study(study_file: str | Path, storage_url: str | None = None, tracking_uri: str | None = None,
              trials: int | None = None, timeout: float | None = None, jobs: int = 1,
              on_progress: Callable[[Progress], None] | None = None, deadline: float | None = None,
              inputs: tuple[Dataset, str] | None = None, plots: bool = True) -> RunResult:
    """Launch or resume a study until it holds `trials` trials (the budget is the study's total).

    `deadline` (a `time.monotonic()` value) ends the search at that moment, however long opening
    the stores took (`run-all --budget`); `inputs` are `load_inputs`' result when already loaded;
    `plots=False` leaves drawing the study's plots to the caller (run-all draws them last, if time is left).
    """
    config, base_dir = load_study_file(study_file)
    budget = trials or config.budget.trials
    timeout = timeout or config.budget.timeout
    # refusals that need no store first, then the remote ones, so a bad input creates no local file
    inputs = inputs or load_inputs(config, base_dir)
    storage_url = _normalize_url(resolve_storage_url(storage_url))
    check_server(resolve_tracking_uri(tracking_uri))
    storage = open_storage(storage_url)
    tracker = Tracker(tracking_uri)
    tracker.check()
    sealed = open_study(config, base_dir, storage_url, inputs=inputs, storage=storage)
    experiment_id = tracker.experiment_id(config.name)
    parent_run_id = _open_parent_run(tracker, sealed, experiment_id, Path(study_file))
    started = time.perf_counter()
    before = progress_of(sealed.study, budget).done
    status = "FINISHED"
    if deadline is not None:
        timeout = max(deadline - time.monotonic(), 0.01)
    try:
        if jobs <= 1:
            _optimize(sealed, tracker, experiment_id, parent_run_id, budget, timeout, worker=0, on_progress=on_progress)
        else:
            _run_workers(sealed, Path(study_file), tracker.uri, budget, timeout, jobs, on_progress)
    except BaseException:
        status = "KILLED"
        raise
    finally:
        result = summarize_run(sealed, budget, before, time.perf_counter() - started)
        if status == "FINISHED" and plots:
            from tuner.dashboard import refresh_after_run

            refresh_after_run(tracker, sealed.study, sealed.score_name, experiment_id, parent_run_id)
        result.tracking_degraded = tracker.degraded
        tracker.finish_study(parent_run_id, _study_metrics(result), _study_tags(sealed, result),
                             status=parent_run_status(sealed.study, status))
    return result


def parent_run_status(study: optuna.Study, status: str) -> str | None:
    """How this worker leaves the study's parent run: `status`, or None (still RUNNING) while other
    workers run trials, so the last worker to finish is the one that closes it."""
    me = worker_label()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return None if any(t.user_attrs.get("worker") != me for t in running) else status


def _open_parent_run(tracker: Tracker, sealed: SealedStudy, experiment_id: str, study_file: Path) -> str:
    from tuner.devices import device_tags

    config = sealed.config
    uses_keras = any(FAMILIES[n].uses_keras for n in config.families)
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
            **device_tags(uses_keras)}
    return tracker.open_study_run(experiment_id, sealed.study.user_attrs[ATTR + "uid"], config.name, tags, params,
                                  {"study.yaml": study_file.read_text()})


def _optimize(sealed: SealedStudy, tracker: Tracker, experiment_id: str, parent_run_id: str, budget: int,
              timeout: float | None, worker: int, on_progress: Callable[[Progress], None] | None) -> None:
    from tuner.devices import device_tags

    config = sealed.config
    study = sealed.study
    close_lost_runs(study, tracker, experiment_id, parent_run_id)
    if progress_of(study, budget).done >= budget:
        return
    folds = search_folds(sealed)
    uses_keras = any(FAMILIES[n].uses_keras for n in config.families)
    if uses_keras:
        from tuner.devices import configure_mixed_precision

        configure_mixed_precision(config.budget.mixed_precision)
    objective = Objective(config, folds, tracker, experiment_id, parent_run_id,
                          {**{k: v for k, v in device_tags(uses_keras).items() if not k.startswith("version.")},
                           **worker_tags(worker), "split_digest": sealed.split.digest},  # the split it verified
                          budget=TimeBudget.from_timeout(timeout), bags=trial_bags(sealed),
                          search_rows=sealed.split.search_rows())
    enqueue_portfolio(study, list(config.families), budget, folds[0].spec)
    first = len(study.trials)
    shared = other_worker_at_work(study.get_trials(deepcopy=False), first)
    study.sampler = make_sampler(config.sampler, sampler_seed(config, first, worker, shared))
    study.pruner = make_pruner(config.pruner, folds=len(folds) if config.split.cross_validated else None)
    if config.sampler.seed is not None and not shared:
        objective = ReseedOnJoin(objective, config, first, worker)
    _search(study, objective, budget, timeout, on_progress)


def sampler_seed(config: StudyConfig, trials_so_far: int, worker: int, shared: bool = False) -> int:
    """An explicit `sampler.seed` replays the same search in a process alone on its study. A process
    sharing it (`shared`, or a `--jobs` slot after the first), and every process without a seed,
    mixes in its host:pid, so separately started workers never propose the same sequence."""
    seed = config.sampler.seed
    if seed is not None and not shared and worker <= 1:
        return seed + trials_so_far
    base = (config.split.seed if seed is None else seed) + trials_so_far
    return int.from_bytes(hashlib.sha256(f"{base}:{worker_label()}".encode()).digest()[:4], "big")


def other_worker_at_work(trials: list[FrozenTrial], first: int, current: int | None = None) -> bool:
    """Another process searches this study: its trial is RUNNING, or was started since this process
    joined (trial number `first` on). Queued trials belong to no one yet."""
    me = worker_label()
    return any(t.number != current and t.state != TrialState.WAITING and t.user_attrs.get("worker") != me
               and (t.state == TrialState.RUNNING or t.number >= first) for t in trials)


class ReseedOnJoin:
    """Wraps the objective of a seeded process that started alone: once another worker's trial shows
    up (workers started at the same moment see each other only then), the sampler takes this
    process's own seed before the trial suggests anything."""

    def __init__(self, objective: Callable[[optuna.Trial], float], config: StudyConfig, first: int,
                 worker: int) -> None:
        self.objective, self.config, self.first, self.worker = objective, config, first, worker
        self.shared = False

    def __call__(self, trial: optuna.Trial) -> float:
        if not self.shared and other_worker_at_work(trial.study.get_trials(deepcopy=False), self.first, trial.number):
            self.shared = True
            trial.study.sampler = make_sampler(self.config.sampler,
                                               sampler_seed(self.config, self.first, self.worker, shared=True))
        return self.objective(trial)


def worker_tags(worker: int) -> dict[str, str]:
    """Who ran a trial: the worker (host:pid), its `--jobs` slot and the GPUs it was given."""
    return {"worker": worker_label(), "worker.slot": str(worker),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "all visible")}


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BudgetGuard:
    """Refuses, at its start, a trial beyond the study's budget, whichever worker or machine runs it.

    The storage hands out trial numbers atomically, so counting the trials numbered before this
    one that spend the budget (finished, running, or queued for a re-run) gives every worker the
    same answer. A refused trial is marked `skipped` and does not count. An interrupted trial
    (Ctrl-C, SIGTERM) is marked and queued again with the same params, so a resume re-runs it.
    """

    def __init__(self, objective: Callable[[optuna.Trial], float], budget: int) -> None:
        self.objective = objective
        self.budget = budget
        self.refused = False

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_label())
        earlier = sum(1 for t in trial.study.get_trials(deepcopy=False)
                      if t.number < trial.number and (counts_toward_budget(t) or _queued(t)))
        if earlier >= self.budget:
            trial.set_user_attr("skipped", f"the budget of {self.budget} trials is spent")
            self.refused = True
            trial.study.stop()
            raise optuna.TrialPruned(f"the budget of {self.budget} trials is spent")
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", f"stopped by a signal in {worker_label()}; queued again")
            trial.study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
            raise


def _queued(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.WAITING and not trial.user_attrs.get("skipped")


def _search(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: int, timeout: float | None,
            on_progress: Callable[[Progress], None] | None) -> None:
    """Run trials until the study holds exactly `budget` counted trials, or the timeout.

    A worker that finds the rest of the budget running elsewhere waits for it: if that worker dies,
    the heartbeat fails its trial and this worker runs the re-queued copy (same params).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    guard = BudgetGuard(objective, budget)
    interval = _heartbeat_of(study)

    def report(study: optuna.Study, _trial: FrozenTrial) -> None:
        progress = progress_of(study, budget)
        if on_progress is not None:
            on_progress(progress)
        if progress.done + progress.running >= budget and not any(map(_queued, study.get_trials(deepcopy=False))):
            guard.refused = True
            study.stop()

    while deadline is None or time.monotonic() < deadline:
        progress = progress_of(study, budget)
        queued = any(map(_queued, study.get_trials(deepcopy=False)))
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
        time.sleep(min(interval, max(deadline - time.monotonic(), 0)) if deadline else interval)
        _fail_stale(study)


def _heartbeat_of(study: optuna.Study) -> int | None:
    getter = getattr(study._storage, "get_heartbeat_interval", None)
    return getter() if getter else None


def _fail_stale(study: optuna.Study) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def close_lost_runs(study: optuna.Study, tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    """Fail the trials of dead workers now and from now on close their MLflow runs, not leave them RUNNING.

    Called when a worker starts: it also closes runs a crashed worker left open on finished trials.
    """
    handler = getattr(study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if isinstance(handler, StaleTrials):
        handler.hooks = [lambda trial: tracker.close_lost_trial_runs(experiment_id, parent_run_id,
                                                                     {trial.number: "KILLED"})]
    _fail_stale(study)
    finished = {t.number: _run_status(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    tracker.close_lost_trial_runs(experiment_id, parent_run_id, finished)


def _run_status(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL:
        return "FAILED" if "error" in trial.user_attrs else "KILLED"
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
        train, parts, preprocessor, encoder = prepare_parts(sealed.dataset, sealed.task, train_rows, {"val": val_rows})
        spec = sealed.problem_spec(len(encoder.classes_) if encoder is not None else 0,
                                   train.X("tabular").shape[1], **preprocessor.input_shapes())
        folds.append(Fold(train, parts["val"], spec))
    return folds


def stored_score_name(attrs: dict[str, Any]) -> str:
    """A stored study's score with its split; studies made before K-fold existed score on `val_`."""
    return attrs.get(ATTR + "score_name") or f"val_{attrs.get(ATTR + 'metric', '?')}"


def _best_of(study: optuna.Study) -> tuple[float | None, str | None]:
    try:
        best = study.best_trial
    except ValueError:
        return None, None
    return best.value, best.user_attrs.get("family")


def _worker_main(study_file: str, storage_url: str, tracking_uri: str, budget: int, timeout: float | None,
                 worker: int) -> None:
    """Entry point of a `--jobs` worker process: reopen the same sealed study and search."""
    interrupt_on_signals()
    config, base_dir = load_study_file(study_file)
    tracker = Tracker(tracking_uri)
    sealed = open_study(config, base_dir, storage_url, create=False)
    experiment_id = tracker.experiment_id(config.name)
    parent = tracker.open_study_run(experiment_id, sealed.study.user_attrs[ATTR + "uid"], config.name, {}, {}, {})
    try:
        _optimize(sealed, tracker, experiment_id, parent, budget, timeout, worker, on_progress=None)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def interrupt_on_signals() -> None:
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: the current trial is marked, its run closed.

    Only the first signal interrupts, so the clean-up it starts (MLflow calls, the `--jobs`
    parent's SIGTERM to workers already stopping on the terminal's Ctrl-C) is not itself cut short.
    """
    def interrupt(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _run_workers(sealed: SealedStudy, study_file: Path, tracking_uri: str, budget: int, timeout: float | None,
                 jobs: int, on_progress: Callable[[Progress], None] | None) -> None:
    """`--jobs N`: N processes on the same storage (TensorFlow state is per process, not per thread)."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(str(study_file), sealed.storage_url, tracking_uri,
                                                            budget, timeout, i + 1), daemon=False)
               for i in range(jobs)]
    for process in workers:
        process.start()
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


def summarize_run(sealed: SealedStudy, budget: int, before: int, elapsed: float) -> RunResult:
    study = sealed.study
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("skipped")]
    result = RunResult(sealed.config.name, sealed.metric, study.direction.name.lower(), before, elapsed_s=elapsed,
                       score_name=sealed.score_name)
    for t in trials:
        result.counts[t.state.name] = result.counts.get(t.state.name, 0) + 1
        if t.state == TrialState.FAIL and result.first_error is None:
            result.first_error = t.user_attrs.get("error")
    result.best_value, result.best_family = _best_of(study)
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


def load_existing(name: str, storage_url: str | None = None) -> optuna.Study:
    storage = open_storage(storage_url)
    study = _find_study(storage, name)
    if study is None:
        known = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise StudyFileError(f"no study named {name!r} in {redact_url(resolve_storage_url(storage_url))} (studies: {known})")
    return study


def describe_study(name: str, storage_url: str | None = None) -> StudyReport:
    study = load_existing(name, storage_url)
    attrs = study.user_attrs
    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if counts_toward_budget(t)]  # what the budget counts, so the totals match it
    not_counted = dict(Counter(uncounted_reason(t) for t in everything if not counts_toward_budget(t)))
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    rows = []
    for family in sorted({t.user_attrs.get("family", "?") for t in trials}):
        mine = [t for t in trials if t.user_attrs.get("family") == family]
        complete = [t for t in mine if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: sign * t.value) if complete else None
        durations = [t.user_attrs["duration_s"] for t in mine if "duration_s" in t.user_attrs]
        rows.append(FamilyRow(
            family, len(mine), len(complete), sum(t.state == TrialState.PRUNED for t in mine),
            sum(t.state == TrialState.FAIL for t in mine), best.value if best else None,
            best.number if best else None, sum(durations) / len(durations) if durations else None,
        ))
    rows.sort(key=lambda r: (r.best_value is None, -sign * (r.best_value or 0.0)))
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    best_value, best_family = _best_of(study)
    best = study.best_trial if best_value is not None else None
    split = attrs.get(ATTR + "split", {})
    return StudyReport(
        name=name, metric=attrs.get(ATTR + "metric", "?"), direction=study.direction.name.lower(),
        task=attrs.get(ATTR + "task", "?"), data=attrs.get(ATTR + "config", {}).get("data", {}).get("source", "?"),
        split_counts={k: split.get(f"n_{k}", 0) for k in ("train", "val", "test", "holdout") if k != "holdout" or
                      split.get("n_holdout")}, states=states,
        families=rows, best_trial=best.number if best else None, best_value=best_value, best_family=best_family,
        best_params=best.user_attrs.get("params", {}) if best else {}, score_name=stored_score_name(attrs),
        folds=f"{split['n_folds']} folds x {split['n_repeats']} repeat(s)" if "n_folds" in split else "",
        finalize=attrs.get(ATTR + "finalize"), holdout_budget=_holdout_budget(attrs), not_counted=not_counted,
        test_looks=int(attrs.get(ATTR + "test_looks", 0)), test_lookers=list(attrs.get(ATTR + "test_lookers", [])),
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
    if trial.user_attrs.get("skipped"):
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
    storage = open_storage(storage_url)
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


def open_sealed(name: str, storage_url: str | None = None, study_file: str | Path | None = None) -> SealedStudy:
    """An existing study with its data re-read and its split record verified (finalize, ensembles).

    The study's own stored definition is used; `study_file` relocates the data (same identity).
    """
    study = load_existing(name, storage_url)
    attrs = study.user_attrs
    if ATTR + "split" not in attrs:
        raise SplitMismatchError(f"study {name!r} has no sealed split record; it cannot be scored honestly")
    if study_file is not None:
        config, base_dir = load_study_file(study_file)
        if config.identity_hash() != attrs.get(ATTR + "identity"):
            raise StudyFileError(f"{study_file} does not define study {name!r} as it was run; pass the study's own file")
    else:
        config = StudyConfig.model_validate(attrs[ATTR + "config"])
        base_dir = Path(attrs.get(ATTR + "base_dir", "."))
    dataset, task = load_inputs(config, base_dir)
    split = SealedSplit.from_record(attrs[ATTR + "split"])
    split.verify(dataset.fingerprint)
    return SealedStudy(config, dataset, task, split, study, resolve_storage_url(storage_url))


def delete_study(name: str, storage_url: str | None = None) -> None:
    """Remove the study from Optuna storage; its MLflow runs stay as a record."""
    load_existing(name, storage_url)
    optuna.delete_study(study_name=name, storage=open_storage(storage_url))
