"""The plug-in family: a user's own Keras model, built from a trial by a function the study file names.

`families: {custom: {builder: "package.module:function", monitor: val_loss}}`. The builder is called
as `function(trial, inputs)`: `trial.suggest_*` searches its hyperparameters (KerasTuner's
`build(hp)`), `inputs` (CustomInputs) says what the data looks like; it returns a compiled model.
With `monitor`, the trial's score is that History key at the best epoch (a VAE's `val_loss`);
without it, the model must predict the target and the study metric scores it like any family.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuner.core.errors import StudyFileError
from tuner.core.metrics import direction_sign
from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, output_head

VIEW_PREFERENCE = ("image", "sequence", "tokens", "text", "tabular")


@dataclass(frozen=True)
class CustomInputs:
    """What a builder is told: the view it will be fed, one sample's shape, and the problem."""

    view: str
    shape: tuple[int, ...]
    task: str
    n_classes: int
    spec: ProblemSpec

    def output_head(self):
        """The book's last layer for this task (sigmoid / softmax / linear), in float32."""
        return output_head(self.spec, name=None)


def resolve_builder(path: str, search_dir: Path | None = None) -> Callable[..., Any]:
    """Import `package.module:function`; any failure is one line naming the path and the fix."""
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.append(str(search_dir))
    module_name, _, function_name = path.partition(":")
    fix = "fix `families.custom.builder` (package.module:function importable from PYTHONPATH or the study file's folder)"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing on import
        raise StudyFileError(f"custom builder {path!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); {fix}") from None
    builder = getattr(module, function_name, None)
    if not callable(builder):
        raise StudyFileError(f"custom builder {path!r}: {module_name!r} has no function {function_name!r}; {fix}")
    return builder


class _Recorder:
    """Passes suggestions through to the trial and remembers them, so the params dict is complete."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.params: dict[str, Any] = {}

    def _record(self, method: str, name: str, *args: Any, **kwargs: Any) -> Any:
        self.params[name] = getattr(self.trial, method)(name, *args, **kwargs)
        return self.params[name]

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._record("suggest_int", name, *args, **kwargs)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._record("suggest_float", name, *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._record("suggest_categorical", name, choices)


class CustomFamily(KerasFamily):
    name = "custom"
    view = "tabular"
    lends_deep_part = False  # a user's model may have several heads, or none named `HEAD`
    description = "your own Keras model: families.custom.builder names a function(trial, inputs) -> compiled model"

    def view_for(self, spec: ProblemSpec) -> str:
        return next(v for v in VIEW_PREFERENCE if v in spec.views)

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if spec.custom_builder is None:
            return "set `builder: package.module:function` under families.custom"
        return None

    def check_options(self, options: Any, study: Any) -> None:
        """A builder always; a `monitor` scores a custom-only study on its own quantity."""
        if options.builder is None:
            raise ValueError("the custom family needs `builder: package.module:function`")
        if options.monitor:
            if len(study.families) > 1:
                raise ValueError(f"custom with monitor {options.monitor!r} scores on its own quantity; "
                                 "drop `monitor` to score it with the study metric next to other families")
            if study.metric:
                raise ValueError(f"custom with monitor {options.monitor!r} is scored by it; drop `metric`")
            if study.direction is None and "loss" not in options.monitor:
                raise ValueError(f"set `direction:` (minimize or maximize) for monitor {options.monitor!r}")

    def every_trial_failed(self, study: Any, error: str) -> str:
        return (f"every custom trial failed: builder {study.custom_builder!r} raised {error}; "
                "fix the builder or drop the custom family")

    def prepare(self, options: Any, base_dir: Path) -> None:
        resolve_builder(options.builder, base_dir)

    def fits_in_workers(self) -> bool:
        """No: the builder is the user's code, found through the study folder this process put on
        its path, which a worker started earlier does not have."""
        return False

    def inputs(self, spec: ProblemSpec) -> CustomInputs:
        view = self.view_for(spec)
        shape = {"image": spec.image_shape, "sequence": spec.sequence_shape, "tokens": spec.sequence_shape,
                 "text": (1,)}.get(view, (spec.n_features,))
        return CustomInputs(view, tuple(shape), spec.task, spec.n_classes, spec)

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        recorder = _Recorder(trial)
        resolve_builder(spec.custom_builder)(recorder, self.inputs(spec))  # run once to learn its space
        return recorder.params

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        from optuna.trial import FixedTrial  # imported here: loading the families (tuner predict) needs no Optuna

        model = resolve_builder(spec.custom_builder)(FixedTrial(params), self.inputs(spec))
        if not isinstance(model, keras().Model) or not getattr(model, "compiled", False):
            raise TypeError(f"custom builder {spec.custom_builder!r} must return a compiled keras.Model, "
                            f"got {type(model).__name__}")
        monitor = spec.custom_monitor or "val_loss"
        mode = "max" if spec.custom_monitor and direction_sign(spec.custom_direction) > 0 else "min"
        return KerasMember(model, spec, batch_size=params.get("batch_size") or spec.batch_size or 32,
                           reduce_lr=spec.reduce_lr == "on", monitor=monitor, mode=mode,
                           score_monitor=spec.custom_monitor is not None)


register(CustomFamily())
