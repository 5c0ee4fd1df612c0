"""The contract every model family keeps: a search space that returns plain params, and a build.

`search_space(trial, spec) -> dict` is what Optuna stores and MLflow logs; `build(params, spec)`
makes an unfitted `Member` from that dict alone, so the best model is rebuilt without a trial and
`optuna.trial.FixedTrial(params)` exercises each space deterministically (KerasTuner's `build(hp)`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pathlib import Path

import numpy as np

if TYPE_CHECKING:
    from sklearn.preprocessing import LabelEncoder

    from tuner.data.preprocess import Part


@dataclass(frozen=True)
class ProblemSpec:
    """What a family needs to know about the problem, never the rows themselves."""

    task: str
    metric: str
    n_classes: int
    n_features: int
    image_shape: tuple[int, ...] | None = None
    max_epochs: int = 60
    max_rounds: int = 500
    patience: int = 8
    seed: int = 0
    # what the data offers Keras families (FeaturePreprocessor.input_shapes); defaults fit a plain table
    views: tuple[str, ...] = ("tabular",)
    sequence_shape: tuple[int, ...] | None = None  # (T, F) series or (T,) token ids
    vocabulary_size: int = 0  # token ids are below this (`data.kind: tokens`)
    n_numeric: int = 0
    categorical_sizes: tuple[int, ...] = ()  # codes per categorical column, 0 = missing / unseen
    bucket_sizes: tuple[int, ...] = ()  # quantile bins per numeric column
    native_categorical: tuple[int, ...] = ()  # columns of the native view that are categorical codes
    # training options from the study file
    batch_size: int | None = None  # fixed batch size; None: each Keras family searches it
    reduce_lr: str = "off"  # ReduceLROnPlateau: "off", "on" or "search"
    custom_builder: str | None = None  # `module:function` of the custom family
    custom_monitor: str | None = None  # History key that scores a custom trial; None: the study metric
    custom_direction: str = "minimize"  # of custom_monitor

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ProblemSpec:
        """Inverse of `to_dict` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})

    @staticmethod
    def data_fields(part: Part, encoder: LabelEncoder | None) -> dict[str, Any]:
        """The fields fitted rows decide: classes (0 for regression), tabular features and every
        view's input shapes. A study's `problem_spec(**data_fields(...))` adds its own settings."""
        return {"n_classes": len(encoder.classes_) if encoder is not None else 0,
                "n_features": part.X("tabular").shape[1], **part.preprocessor.input_shapes()}


class Member(ABC):
    """A fitted model with scikit-learn's face: `fit` returns self, learned attributes end in `_`.

    `predict_scores` gives class probabilities (N x classes) for classification and values (N,)
    for regression: the one prediction form metrics, blends and exports work from.
    """

    best_step_: int | None = None  # epochs / rounds early stopping kept; None for one-shot fits
    curves_: dict[str, list[float]]
    picklable: ClassVar[bool] = True  # joblib can write it (a bag's fold models); Keras models cannot

    def __init__(self) -> None:
        self.curves_ = {}

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, trial: Any = None) -> Member:
        """Fit on training rows; validation rows drive early stopping and per-step pruning only.

        Without validation rows a stepwise member trains for exactly `max_epochs` / `max_rounds`
        steps: that is how a configuration is refitted on train + validation with the step count
        early stopping found.
        """

    @abstractmethod
    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.predict_scores(X)
        return scores.argmax(axis=1) if scores.ndim == 2 else scores

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the fitted member in its library's own format at `path` (suffix chosen by the member)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Member:
        """Read back what `save` wrote; predictions are identical."""


class BoosterMember(Member):
    """A gradient-boosted member (XGBoost, LightGBM, CatBoost, HistGradientBoosting): params and spec,
    a fitted `model_` (scikit-learn's predict face unless the member overrides `predict_scores`), and
    its state saved beside the model file as `.member.json`."""

    def __init__(self, params: dict, spec: ProblemSpec) -> None:
        super().__init__()
        self.params = params
        self.spec = spec

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        if self.spec.is_classification:
            return self.model_.predict_proba(X)
        return self.model_.predict(X)

    def write_state(self, model_path: Path) -> None:
        state = {"params": self.params, "spec": self.spec.to_dict(), "best_step_": self.best_step_}
        model_path.with_suffix(".member.json").write_text(json.dumps(state))

    @classmethod
    def from_state(cls, model_path: Path) -> BoosterMember:
        """The member without its model (the caller loads `model_`)."""
        state = json.loads(model_path.with_suffix(".member.json").read_text())
        member = cls(state["params"], ProblemSpec.from_dict(state["spec"]))
        member.best_step_ = state["best_step_"]
        return member


class Family(ABC):
    """One searchable model family. Subclasses set `name` and `view` and are registered once.

    Beyond its space and build, a family answers every question the other stages ask about it
    (how to seed and fit a member, where it sits in the portfolio, what its curves are called, what a
    blend may borrow from it), so no module outside `tuner.models` branches on a family's name.
    """

    name: ClassVar[str]
    view: ClassVar[str] = "tabular"  # which feature view it consumes (see data.preprocess.VIEWS)
    description: ClassVar[str] = ""
    # module -> pip package the family imports only when it fits, checked before a study starts
    requires: ClassVar[dict[str, str]] = {}
    # where its default sits in a new study's portfolio: lower first, ties by name (the cheap
    # scikit-learn and XGBoost families 10-40, LightGBM 50 as any other family, CatBoost 60, the Keras
    # families 100)
    portfolio_rank: ClassVar[int] = 50
    # tuner may pick it for a study file that names no `families:` (tuner.models.portfolio.choose_families)
    picked: ClassVar[bool] = False
    min_budget_s: ClassVar[float] = 0.0  # a known time budget shorter than this leaves it out of that choice
    curve_step: ClassVar[str] = "round"  # its per-step curves are logged as `<curve_step>/<name>`
    draws_curves: ClassVar[bool] = False  # the study page draws its best trials' learning curves
    # trains on TensorFlow: a study of it reads TensorFlow's devices and sets mixed precision, and
    # its bags pay TensorFlow's start-up (tuner.pipeline.run_all's plans)
    uses_tensorflow: ClassVar[bool] = False
    gives_leaves: ClassVar[bool] = False  # its fitted model `apply`s rows to leaf indices: a blend's wide part
    lends_deep_part: ClassVar[bool] = False  # its network can be rebuilt as a wide-and-deep blend's deep part

    @abstractmethod
    def search_space(self, trial: Any, spec: ProblemSpec) -> dict[str, Any]:
        """Suggest this family's hyperparameters; return them as a plain dict."""

    @abstractmethod
    def build(self, params: dict[str, Any], spec: ProblemSpec) -> Member:
        """An unfitted member from params alone."""

    def default_params(self, spec: ProblemSpec) -> dict[str, Any] | None:
        """The values `search_space` should suggest to give the library's well-known default model.

        The first entry of `portfolio`: every study tries it first, so the first seconds of any budget
        already hold what a user would get from the library. None: no default.
        """
        return None

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict[str, Any]]:
        """Configurations known to be strong across many tables, by a label naming their source, the
        library default first: a new study runs them before the sampler (tuner.models.portfolio).
        Each is a point of `search_space`; a family without any gets one sampled trial instead."""
        defaults = self.default_params(spec)
        return {} if defaults is None else {"default": defaults}

    def view_for(self, spec: ProblemSpec) -> str:
        """The view this family reads for this data; families that take several kinds override it."""
        return self.view

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        """Why this family cannot fit this problem (e.g. a convnet on a table), or None."""
        return None

    def deep_part_params(self) -> dict[str, Any] | None:
        """Params of the network a wide-and-deep blend uses as its deep part when no member lends
        one; None: this family is not that fallback."""
        return None

    def check_options(self, options: Any, study: Any) -> None:
        """Refuse (ValueError) options in `families.<name>` this family does not take; `study` is the
        whole StudyConfig. Only the custom family takes `builder` and `monitor`."""
        if options.builder or options.monitor:
            raise ValueError(f"`builder` and `monitor` belong to the custom family, not {self.name!r}")

    def prepare(self, options: Any, base_dir: Path) -> None:
        """Check what the family loads from outside the package (a builder's module), before a store
        is touched; `base_dir` is the study file's folder."""

    def every_trial_failed(self, study: Any, error: str) -> str:
        """The one line saying that no trial of this family got through, and `error`, the first one's;
        `study` is the StudyConfig. The custom family names the user's builder."""
        return f"every {self.name} trial failed, the first with {error}"

    def seed(self, seed: int) -> None:
        """Seed the library's global random state before a build; members that take their seed from
        the spec need nothing."""

    def release_memory(self) -> None:
        """Free what fitted members left in the library's global state, once they are not needed."""

    def fits_in_workers(self) -> bool:
        """Whether its folds may be fitted side by side in joblib worker processes
        (`tuner.search.fold_fits`); False keeps every fit in the study's own process."""
        return True

    # seconds a fold worker spends loading the family's library before its first fit (TensorFlow's
    # import on two cores: about 10 s); its folds go to workers only once a fold costs half of that
    worker_start_s: ClassVar[float] = 0.0

    def limit_process_threads(self, threads: int) -> None:
        """Size the library's process-wide thread pools (those fixed when it starts) in a fold worker."""

    def fit_member(self, params: dict[str, Any], spec: ProblemSpec, number: int, X: Any, y: np.ndarray,
                   X_val: Any = None, y_val: np.ndarray | None = None, trial: Any = None,
                   curves: dict[str, list[float]] | None = None) -> Member:
        """Seed, build and fit one member: how the search, the bags, the out-of-fold fits and the
        final refit all fit a configuration, so a refit starts from the seed its trial had.

        `number` (the trial's) offsets the study seed; `curves` receives the member's learning
        curves even when the fit is pruned or fails. The caller calls `release_memory` once it is
        done with the member.
        """
        self.seed(spec.seed + number)
        member = self.build(params, spec)
        try:
            return member.fit(X, y, X_val, y_val, trial=trial)
        finally:
            if curves is not None:
                curves.update(member.curves_)

    def missing_package(self) -> str | None:
        """The pip package of the first required module that cannot be imported, or None."""
        for module, package in self.requires.items():
            if not _importable(module):
                return package
        return None


def _importable(module: str) -> bool:
    """Found without importing it; a module already imported counts (lazy ones such as
    optuna_integration have no __spec__, which find_spec refuses)."""
    import importlib.util
    import sys

    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class ScopedTrial:
    """Prefixes parameter names with the family so conditional spaces never collide in Optuna."""

    trial: Any
    scope: str
    _names: list[str] = field(default_factory=list)

    def _name(self, name: str) -> str:
        return f"{self.scope}.{name}"

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self.trial.suggest_int(self._name(name), *args, **kwargs)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self.trial.suggest_float(self._name(name), *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.trial.suggest_categorical(self._name(name), choices)
