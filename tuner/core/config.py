"""The study file: a YAML document validated with pydantic, so a typo fails before any training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner.core.errors import StudyFileError
from tuner.core.metrics import METRICS, default_metric
from tuner.models import FAMILIES

MAX_TRIALS = 100_000  # a study's trial budget at most: more is a typo (an extra zero or two), not a plan

Task = Literal["binary", "multiclass", "regression"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the rows come from: `builtin:NAME`, or a CSV / Parquet / NPZ path (relative to the file)."""

    source: str
    target: str | None = None
    kind: Literal["auto", "tokens"] = Field(
        "auto", description="`tokens`: an NPZ X of non-negative integer token ids (0 = padding), not numbers")

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value.startswith("builtin:"):
            return value
        if Path(value).suffix.lower() not in {".csv", ".parquet", ".pq", ".npz"}:
            raise ValueError(
                f"'{value}' is neither builtin:NAME nor a .csv, .parquet or .npz file"
            )
        return value


DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_FOLDS = 5  # a split that names neither validation_fraction nor folds bags every trial 5-fold


class ThresholdoutConfig(_Strict):
    """Reusable holdout (Dwork et al., Science 2015): how answers are noised and how many may differ."""

    threshold: float = Field(0.04, gt=0.0, description="a holdout score further than this from val/cv is news")
    sigma: float = Field(0.01, gt=0.0, description="Laplace noise scale on the threshold and on answers")
    budget: int = Field(30, gt=0, description="answers that may reveal the holdout score before it is spent")


class SplitConfig(_Strict):
    """How the rows are sealed: a test part the search never sees, and validation or K folds.

    With `folds` the non-test rows are rotated through K (stratified) folds, `repeats` times, and
    `validation_fraction` has no meaning, so setting both is refused. Naming neither gives
    `folds: 5`: every trial is then a bag of 5 fold models whose out-of-fold predictions the
    ensemble stage selects from, AutoGluon's design (tuner.study.trial_bags). `holdout_fraction` carves a
    second sealed part that only `tuner study holdout` reads, through Thresholdout.
    """

    test_fraction: float = Field(0.2, gt=0.0, lt=0.6)
    validation_fraction: float | None = Field(None, gt=0.0, lt=0.6, description="default 0.2; not with folds")
    seed: int = 0
    folds: int | None = Field(None, ge=2, le=50, description="K-fold objective: the score is the mean over folds")
    repeats: int = Field(1, ge=1, le=20, description="repeated K-fold: the folds are redrawn this many times")
    holdout_fraction: float | None = Field(None, gt=0.0, lt=0.5, description="sealed reusable-holdout part")
    thresholdout: ThresholdoutConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _bagged_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("folds") is None and data.get("validation_fraction") is None:
            return {**data, "folds": DEFAULT_FOLDS}
        return data

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.folds is not None and self.validation_fraction is not None:
            raise ValueError("validation_fraction is unused with folds (every non-test row validates once per "
                             "repeat); drop one of them")
        if self.folds is None and self.repeats != 1:
            raise ValueError("repeats needs folds (e.g. folds: 5, repeats: 2)")
        if self.thresholdout is not None and self.holdout_fraction is None:
            raise ValueError("thresholdout needs holdout_fraction (e.g. holdout_fraction: 0.15)")
        held = self.test_fraction + (self.holdout_fraction or 0.0) + (self.validation_share or 0.0)
        if held > 0.7:
            raise ValueError("test_fraction + validation_fraction + holdout_fraction must leave at least 30% for training")
        return self

    @property
    def validation_share(self) -> float | None:
        """The validation part's fraction of all rows; None with folds (there is no single one)."""
        if self.folds is not None:
            return None
        return DEFAULT_VALIDATION_FRACTION if self.validation_fraction is None else self.validation_fraction

    @property
    def cross_validated(self) -> bool:
        return self.folds is not None

    @property
    def reusable_holdout(self) -> ThresholdoutConfig | None:
        """Thresholdout settings when the study has a holdout part (defaults when only the fraction is set)."""
        if self.holdout_fraction is None:
            return None
        return self.thresholdout or ThresholdoutConfig()

    def score_prefix(self) -> str:
        """How a search score is named: `cv_` (mean over folds) or `val_` (one validation part)."""
        return "cv_" if self.cross_validated else "val_"


BUILDER_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class FamilyConfig(_Strict):
    """Per-family options inside `families:`; `builder` and `monitor` belong to `custom` only."""

    max_trials: int | None = Field(None, gt=0)
    builder: str | None = Field(None, description="`package.module:function` returning a compiled Keras model")
    monitor: str | None = Field(None, pattern=r"^val_[A-Za-z0-9_]+$",
                                description="History key whose best-epoch value is the trial's score")

    @field_validator("builder")
    @classmethod
    def _builder_path(cls, value: str | None) -> str | None:
        import re

        if value is not None and not re.match(BUILDER_PATH, value):
            raise ValueError(f"builder {value!r} is not `package.module:function`, e.g. tuner.examples.vae:build_vae")
        return value


class BudgetConfig(_Strict):
    """How much search a run may spend; `trials` is the study's total, so a rerun resumes."""

    trials: int = Field(30, gt=0, le=MAX_TRIALS, description="the study's total trials, across every worker")
    timeout: float | None = Field(None, gt=0, description="seconds for one `study run`")
    epochs: int = Field(60, gt=0, description="most epochs a Keras trial may train")
    rounds: int = Field(500, gt=0, description="most boosting rounds an XGBoost trial may fit")
    patience: int = Field(8, gt=0, description="early-stopping patience in epochs / rounds / 5")
    batch_size: int | None = Field(None, gt=0, description="fixes the Keras batch size instead of searching it")
    reduce_lr: Literal["off", "on", "search"] = Field(
        "off", description="ReduceLROnPlateau in Keras trials: never, always, or a searched choice")
    mixed_precision: bool = Field(False, description="mixed_float16 for Keras trials; applied only on a GPU")


class SamplerConfig(_Strict):
    name: Literal["tpe", "random", "cmaes", "gp"] = "tpe"
    seed: int | None = Field(None, description="defaults to split.seed")


class PrunerConfig(_Strict):
    name: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    startup_trials: int = Field(5, ge=0)
    warmup_steps: int = Field(3, ge=0)


class StudyConfig(_Strict):
    """One study file. Everything but `budget` and `description` is part of the study's identity."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    data: DataConfig
    task: Task | None = None
    metric: str | None = None
    direction: Literal["minimize", "maximize"] | None = None
    split: SplitConfig = SplitConfig()
    # None: tuner picks them for the task, the data and the time budget when the study is created
    # (tuner.models.portfolio.choose_families) and stores its choice with the study
    families: dict[str, FamilyConfig] | None = None
    budget: BudgetConfig = BudgetConfig()
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()

    @field_validator("families", mode="before")
    @classmethod
    def _families_as_mapping(cls, value: Any) -> Any:
        if isinstance(value, list):
            mapping: dict[str, Any] = {}
            for item in value:
                if isinstance(item, str):
                    mapping[item] = {}
                elif isinstance(item, dict) and len(item) == 1:
                    mapping.update({k: v or {} for k, v in item.items()})
                else:
                    raise ValueError("each entry is a family name or {name: {max_trials: N}}")
            return mapping
        if isinstance(value, dict):
            return {k: v or {} for k, v in value.items()}
        return value

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: dict[str, FamilyConfig] | None) -> dict[str, FamilyConfig] | None:
        if value is None:
            return value
        if not value:
            raise ValueError(f"name at least one family: {', '.join(sorted(FAMILIES))}")
        unknown = sorted(set(value) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown family {unknown[0]!r}; choose from {', '.join(sorted(FAMILIES))}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; choose from {', '.join(sorted(METRICS))}")
        return value

    @model_validator(mode="after")
    def _metric_fits_task(self) -> StudyConfig:
        if self.metric and self.task and self.task not in METRICS[self.metric].tasks:
            raise ValueError(f"metric {self.metric!r} does not fit a {self.task} task")
        if self.metric and self.direction and self.direction != METRICS[self.metric].direction:
            raise ValueError(
                f"{self.metric} is to {METRICS[self.metric].direction}; drop `direction` or fix it"
            )
        return self

    @model_validator(mode="after")
    def _family_options(self) -> StudyConfig:
        """Each family refuses the options it does not take (`builder` and `monitor`: the custom family's)."""
        for name, options in (self.families or {}).items():
            FAMILIES[name].check_options(options, self)
        return self

    @property
    def picks_families(self) -> bool:
        """The study file names no `families:`: tuner picks them when the study is created."""
        return self.families is None

    def with_families(self, names: list[str]) -> StudyConfig:
        """This config searching `names` with default options: what tuner picked for a study file without
        `families:` (its identity stays the file's)."""
        return self.model_copy(update={"families": {name: FamilyConfig() for name in names}})

    @property
    def custom_monitor(self) -> str | None:
        """The History key a custom-only study optimises, or None when the study metric scores trials
        (only the custom family takes a `monitor`)."""
        return next((options.monitor for options in (self.families or {}).values() if options.monitor), None)

    @property
    def custom_builder(self) -> str | None:
        """The custom family's `builder`, or None (only that family takes one)."""
        return next((options.builder for options in (self.families or {}).values() if options.builder), None)

    def objective_name(self, task: str) -> str:
        """What the study optimises: a metric name, or a custom model's monitored key."""
        return self.custom_monitor.removeprefix("val_") if self.custom_monitor else self.resolved_metric(task)

    def objective_direction(self, task: str) -> str:
        if self.custom_monitor:
            return self.direction or "minimize"
        return METRICS[self.resolved_metric(task)].direction

    def resolved_metric(self, task: str) -> str:
        """The metric the search optimises, once the task is known (it may be inferred)."""
        metric = self.metric or default_metric(task)
        if task not in METRICS[metric].tasks:
            raise StudyFileError(f"metric {metric!r} does not fit the {task} task inferred from the data; set `task:` or `metric:`")
        return metric

    def identity_hash(self) -> str:
        """Hash of what defines the study; budget and description may change between runs."""
        identity = self.model_dump(exclude={"budget", "description"}, mode="json")
        # keys added after studies were first stored are left out at their defaults, so old hashes hold
        if identity["data"].get("kind") == "auto":
            del identity["data"]["kind"]
        split = identity["split"]
        for key, default in (("folds", None), ("repeats", 1), ("holdout_fraction", None), ("thresholdout", None)):
            if split.get(key) == default:
                split.pop(key, None)
        if split.get("validation_fraction") is None:
            split.pop("validation_fraction", None)
            if "folds" not in split:
                split["validation_fraction"] = DEFAULT_VALIDATION_FRACTION
        for family in (identity["families"] or {}).values():
            for key in ("builder", "monitor"):
                if family.get(key) is None:
                    family.pop(key, None)
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_study_file(path: str | Path) -> tuple[StudyConfig, Path]:
    """Read and validate a study file; return the config and the folder relative paths start from."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"{path}: no such study file; see `ls studies/` for the shipped ones")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise StudyFileError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise StudyFileError(f"{path}: a study file is a YAML mapping with at least name and data")
    try:
        return StudyConfig.model_validate(raw), path.resolve().parent
    except ValidationError as exc:
        raise StudyFileError(f"{path}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors folded into one line: `field: problem` for each."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "file"
        if error["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key (check the spelling; see README 'Study file')")
        elif error["type"] == "missing":
            parts.append(f"{loc}: required key is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {message} (got {error.get('input')!r})")
    return "; ".join(parts)
