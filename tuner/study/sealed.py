"""The sealed study: a study with its data, task and verified split, and the two ways to open one.

`open_study` (for `study run`) loads the study of a study file's name or creates it and seals
its split; `open_sealed` (finalize, ensembles, the holdout) opens a study that has run, from its
own stored definition. Everything that can be refused (study file, data, a study of the same name
with another definition, changed data) is checked before anything is written, so a bad input
leaves no half-made study.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.core.config import StudyConfig, load_study_file
from tuner.data import Dataset, SealedSplit, check_task, infer_task, load_dataset, make_split
from tuner.data.preprocess import probe_shapes
from tuner.core.errors import SplitMismatchError, StudyFileError
from tuner.models import FAMILIES, ProblemSpec
from tuner.models.portfolio import FamilyChoice, choose_families
from tuner.study.storage import find_study, load_existing, normalize_url, open_storage, redact_url, resolve_storage_url

ATTR = "tuner."  # prefix of the study attributes tuner owns
CHOSEN_ATTR = ATTR + "families_chosen"  # tuner's choice of families for a study file that names none


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
    return ProblemSpec(task=task, metric=config.resolved_metric(task), n_classes=n_classes, n_features=n_features,
                       max_epochs=budget.epochs, max_rounds=budget.rounds, patience=budget.patience,
                       seed=config.split.seed, batch_size=budget.batch_size, reduce_lr=budget.reduce_lr,
                       custom_builder=config.custom_builder, custom_monitor=config.custom_monitor,
                       custom_direction=config.objective_direction(task), **inputs)


def load_inputs(config: StudyConfig, base_dir: Path) -> tuple[Dataset, str]:
    """Check each family's packages are installed, load and check the data, infer the task and
    check each family can fit it: everything refused before a store is touched. A study file without
    `families:` has them checked when tuner picks them (`open_study`)."""
    for name in config.families or ():
        package = FAMILIES[name].missing_package()
        if package:
            raise StudyFileError(f"family {name!r} needs the {package} package: pip install {package} "
                                 "(or drop the family from `families:`)")
    dataset = load_dataset(config.data.source, config.data.target, base_dir, kind=config.data.kind)
    task = config.task or infer_task(dataset.y)
    check_task(dataset.y, task, config.data.source)
    config.resolved_metric(task)
    for name, options in (config.families or {}).items():
        FAMILIES[name].prepare(options, base_dir)
    probe = problem_spec(config, task, n_classes=0, n_features=0, **probe_shapes(dataset.X, dataset.kind))
    for name in config.families or ():
        reason = FAMILIES[name].unsupported_reason(probe)
        if reason:
            raise StudyFileError(f"family {name!r} cannot search {config.data.source}: {reason}")
    return dataset, task


def open_study(config: StudyConfig, base_dir: Path, storage_url: str | None = None, create: bool = True,
               inputs: tuple[Dataset, str] | None = None,
               storage: optuna.storages.BaseStorage | None = None, seconds: float | None = None) -> SealedStudy:
    """Load the study of this name, or create it and seal its split; refuse any mismatch.

    `inputs` (from `load_inputs`) and `storage` (opened on `storage_url`) spare loading them twice.
    A study file without `families:` gets tuner's choice for the data and `seconds` of budget (None:
    no time limit) when the study is created, and the stored choice on every later open.
    When several workers start at once, the one whose `create_study` succeeds seals the split;
    the others wait for its record, so all of them search the same split.
    """
    dataset, task = inputs or load_inputs(config, base_dir)
    storage_url = normalize_url(resolve_storage_url(storage_url))
    storage = storage or open_storage(storage_url)
    direction = config.objective_direction(task)
    existing = find_study(storage, config.name)
    if existing is None and create:
        try:
            created = optuna.create_study(storage=storage, study_name=config.name, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            existing = _wait_for_seal(storage, config.name)
        else:
            return _seal(config, base_dir, dataset, task, created, storage_url, seconds)
    if existing is None:
        raise StudyFileError(f"no study named {config.name!r} in {redact_url(storage_url)}; run `tuner study run` first")
    if ATTR + "split" not in existing.user_attrs and not existing.trials:
        existing = _wait_for_seal(storage, config.name)  # created a moment ago by another worker
    attrs = existing.user_attrs
    if ATTR + "split" not in attrs:
        if existing.trials:
            raise StudyFileError(f"study {config.name!r} exists but was not made by tuner; use another name")
        return _seal(config, base_dir, dataset, task, existing, storage_url, seconds)  # its creator died before sealing
    if attrs.get(ATTR + "identity") != config.identity_hash():
        raise StudyFileError(
            f"study {config.name!r} already exists with a different definition (data, split, families or "
            f"search settings changed); give the study a new name or `tuner study delete {config.name}`"
        )
    split = SealedSplit.from_record(attrs[ATTR + "split"])
    split.verify(dataset.fingerprint)
    return SealedStudy(with_chosen_families(config, attrs), dataset, task, split, existing, storage_url)


def with_chosen_families(config: StudyConfig, attrs: dict[str, Any]) -> StudyConfig:
    """The config with the families tuner stored for it when its study file names none."""
    if not config.picks_families:
        return config
    if CHOSEN_ATTR not in attrs:
        raise StudyFileError(f"study {config.name!r} names no families and has no stored choice of them; "
                             f"`tuner study delete {config.name}` and run it again")
    return config.with_families(FamilyChoice.from_record(attrs[CHOSEN_ATTR]).families)


def chosen_families(attrs: dict[str, Any]) -> FamilyChoice | None:
    """tuner's stored choice of families for a study whose file names none, else None."""
    return FamilyChoice.from_record(attrs[CHOSEN_ATTR]) if CHOSEN_ATTR in attrs else None


def planned_families(config: StudyConfig, inputs: tuple[Dataset, str], seconds: float | None) -> list[str]:
    """The families a study will search, before it is opened: the file's, or what tuner would pick
    for `seconds` (what `run-all` plans its stages' time with)."""
    if not config.picks_families:
        return list(config.families)
    dataset, task = inputs
    return _choose(config, dataset, task, len(dataset.y), seconds).families


def _choose(config: StudyConfig, dataset: Dataset, task: str, rows: int, seconds: float | None) -> FamilyChoice:
    """tuner's families for a study file that names none; refused when no family can read this data."""
    probe = problem_spec(config, task, n_classes=0, n_features=0, **probe_shapes(dataset.X, dataset.kind))
    columns = dataset.X.shape[1] if dataset.X.ndim == 2 else 0
    choice = choose_families(probe, rows, columns, seconds)
    if choice is None:
        raise StudyFileError(f"tuner found no installed family for {config.data.source}; name one under `families:`")
    return choice


def _seal(config: StudyConfig, base_dir: Path, dataset: Dataset, task: str, study: optuna.Study,
          storage_url: str, seconds: float | None = None) -> SealedStudy:
    """Write the study's definition, tuner's choice of families (when the file names none) and the split
    record; the split goes last, as the 'sealed' mark."""
    identity, stored = config.identity_hash(), config.model_dump(mode="json")  # the file's, families or none
    split = make_split(dataset.y, task, config.split.test_fraction, config.split.validation_share,
                       config.split.seed, dataset.fingerprint, folds=config.split.folds,
                       repeats=config.split.repeats, holdout_fraction=config.split.holdout_fraction)
    if config.picks_families:
        choice = _choose(config, dataset, task, len(split.search_rows()), seconds)
        study.set_user_attr(CHOSEN_ATTR, choice.to_record())
        config = config.with_families(choice.families)
    for key, value in {
        "identity": identity, "config": stored, "task": task,
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


def stored_score_name(attrs: dict[str, Any]) -> str:
    """A stored study's score with its split; studies made before K-fold existed score on `val_`."""
    return attrs.get(ATTR + "score_name") or f"val_{attrs.get(ATTR + 'metric', '?')}"


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
    config = with_chosen_families(config, attrs)
    dataset, task = load_inputs(config, base_dir)
    split = SealedSplit.from_record(attrs[ATTR + "split"])
    split.verify(dataset.fingerprint)
    return SealedStudy(config, dataset, task, split, study, resolve_storage_url(storage_url))
