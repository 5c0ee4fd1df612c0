"""The training loop every Keras family shares, as the book does it.

Last layer and loss by task, early stopping on the validation twin of the study metric with the
best weights restored, optional ReduceLROnPlateau, per-epoch Optuna pruning (optuna-integration's
KerasPruningCallback), per-epoch curves kept on the member, `.keras` saving, and memory released
between trials. Preprocessing layers (TextVectorization) are adapted on the training rows inside
`fit`, so a saved model takes raw strings.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tuner._quiet import import_tensorflow
from tuner.core.deadline import past_deadline
from tuner.core.metrics import METRICS, renormalise
from tuner.models.base import Member, ProblemSpec

PREDICT_BATCH = 1024


def keras():
    import_tensorflow()
    import keras as _keras

    return _keras


HEAD = "head"  # the Dense layer from a built-in family's last hidden representation to its outputs


def output_head(spec: ProblemSpec, name: str | None = HEAD):
    """The book's last layer by problem type: sigmoid / softmax / linear.

    Named `HEAD` so the wide-and-deep blend finds the representation it reads (`last_hidden`);
    custom builders get it unnamed, since they may use several heads in one model.
    """
    layers = keras().layers
    if spec.task == "binary":
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=name)
    if spec.task == "multiclass":
        return layers.Dense(spec.n_classes, activation="softmax", dtype="float32", name=name)
    return layers.Dense(1, dtype="float32", name=name)


def last_hidden(model):
    """The input of the model's `HEAD` layer: its last hidden representation, or None without one.

    Not the input of the model's last layer: the wide & deep family ends in an Activation over its
    summed wide and deep logits.
    """
    heads = [layer for layer in model.layers if layer.name == HEAD]
    return heads[0].input if len(heads) == 1 else None


def output_units(spec: ProblemSpec) -> int:
    return spec.n_classes if spec.task == "multiclass" else 1


def output_activation(spec: ProblemSpec):
    """The last layer's activation alone, for models that add up logits (wide & deep)."""
    name = {"binary": "sigmoid", "multiclass": "softmax"}.get(spec.task, "linear")
    return keras().layers.Activation(name, dtype="float32")


def training_params(trial, spec: ProblemSpec) -> dict:
    """Optimizer, learning rate, batch size and ReduceLROnPlateau: searched unless the study fixes them."""
    params = {
        "optimizer": trial.suggest_categorical("optimizer", ["rmsprop", "adam"]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "batch_size": spec.batch_size or trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
    }
    if spec.reduce_lr == "search":
        params["reduce_lr"] = trial.suggest_categorical("reduce_lr", [False, True])
    return params


def member_for(model, params: dict, spec: ProblemSpec, adapt: tuple = ()) -> KerasMember:
    """Compile with the searched optimizer and wrap it with the study's training options."""
    compile_model(model, spec, params["optimizer"], params["learning_rate"])
    reduce_lr = params.get("reduce_lr", spec.reduce_lr == "on")
    return KerasMember(model, spec, batch_size=spec.batch_size or params["batch_size"], reduce_lr=reduce_lr, adapt=adapt)


def model_input(model, X):
    """What Keras accepts: strings as tf tensors, dicts cut to the model's own inputs."""
    if isinstance(X, dict):
        return {name: model_input(model, X[name]) for name in (t.name for t in model.inputs)}
    if isinstance(X, np.ndarray) and X.dtype.kind in "UO":
        import tensorflow as tf

        return tf.constant(X.astype(str))
    return X


def _loss(spec: ProblemSpec) -> str:
    return {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"}.get(spec.task, "mse")


def _metric_twin(spec: ProblemSpec):
    k = keras().metrics
    name = METRICS[spec.metric].keras_name
    return {
        "auc": lambda: k.AUC(name="auc"),
        "accuracy": lambda: k.BinaryAccuracy(name="accuracy") if spec.task == "binary" else k.SparseCategoricalAccuracy(name="accuracy"),
        "rmse": lambda: k.RootMeanSquaredError(name="rmse"),
        "mae": lambda: k.MeanAbsoluteError(name="mae"),
        "r2": lambda: k.R2Score(name="r2"),
        "loss": lambda: None,
    }[name]()


def make_optimizer(name: str, learning_rate: float):
    optimizers = keras().optimizers
    return {"rmsprop": optimizers.RMSprop, "adam": optimizers.Adam, "sgd": optimizers.SGD}[name](learning_rate=learning_rate)


def compile_model(model, spec: ProblemSpec, optimizer: str, learning_rate: float) -> None:
    twin = _metric_twin(spec)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=_loss(spec),
                  metrics=[twin] if twin is not None else [])


def monitored(spec: ProblemSpec) -> tuple[str, str]:
    """The History key to watch and its mode."""
    metric = METRICS[spec.metric]
    return f"val_{metric.keras_name}", "max" if metric.sign > 0 else "min"


class KerasMember(Member):
    """A compiled Keras model behind the Member face; regression targets are standardised.

    `adapt` lists (preprocessing layer, input name or None) pairs adapted on the training rows
    before the first epoch. `monitor` (with `mode`) replaces the study metric's validation twin for
    early stopping; with `score_monitor` its value at the best epoch is the trial's score
    (`validation_score_`) instead of the study metric.
    """

    picklable = False  # a TensorFlow graph: saved as `.keras`

    def __init__(self, model, spec: ProblemSpec, batch_size: int, reduce_lr: bool = False,
                 adapt: tuple = (), monitor: str | None = None, mode: str = "min",
                 score_monitor: bool = False) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.batch_size = batch_size
        self.reduce_lr = reduce_lr
        self.adapt = adapt
        self.monitor = monitor
        self.mode = mode
        self.score_monitor = score_monitor
        self.validation_score_: float | None = None

    def fit(self, X, y, X_val=None, y_val=None, trial: Any = None) -> KerasMember:
        k = keras()
        for layer, name in self.adapt:
            layer.adapt((X[name] if name else X)[:, 0].astype(str).tolist())
        y = self._targets(self._scale_target(y, fit=True))
        monitor, mode = (self.monitor, self.mode) if self.monitor else monitored(self.spec)
        curves = self.curves_

        class Curves(k.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    curves.setdefault(key if key.startswith("val_") or key == "learning_rate" else f"train_{key}", []).append(float(value))

        if X_val is None:
            self.model.fit(model_input(self.model, X), y, epochs=self.spec.max_epochs, batch_size=self.batch_size,
                           callbacks=[Curves()], verbose=0)
            self.best_step_ = self.spec.max_epochs
            return self
        y_val = self._targets(self._scale_target(y_val))
        callbacks = [k.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=self.spec.patience, restore_best_weights=True)]
        if self.reduce_lr:
            callbacks.append(k.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, patience=max(2, self.spec.patience // 2)))
        callbacks.append(Curves())  # after ReduceLROnPlateau (it logs the learning rate), before pruning

        class StopAtDeadline(k.callbacks.Callback):
            """A search trial ends at the epoch that crosses the study's timeout (best weights restored)."""

            def on_epoch_end(self, epoch, logs=None):
                if past_deadline():
                    self.model.stop_training = True

        callbacks.append(StopAtDeadline())
        if trial is not None:
            from optuna_integration.keras import KerasPruningCallback

            callbacks.append(KerasPruningCallback(trial, monitor))
        self.model.fit(model_input(self.model, X), y, validation_data=(model_input(self.model, X_val), y_val),
                       epochs=self.spec.max_epochs, batch_size=self.batch_size, callbacks=callbacks, verbose=0)
        watched = curves.get(monitor)
        if not watched:
            raise ValueError(f"the model logs no {monitor!r} (it logs {', '.join(curves) or 'nothing'}); "
                             "fix `monitor` or the model's compiled metrics")
        best = int(np.nanargmax(watched) if mode == "max" else np.nanargmin(watched))
        self.best_step_ = best + 1
        if self.score_monitor:
            self.validation_score_ = float(watched[best])
        return self

    def _targets(self, y: np.ndarray):
        """One target per output: a multi-output model learns the study target on each of its heads."""
        return [y] * len(self.model.outputs) if len(self.model.outputs) > 1 else y

    def _scale_target(self, y: np.ndarray, fit: bool = False) -> np.ndarray:
        if self.spec.is_classification:
            return y
        if fit:
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y)) or 1.0
        return ((y - self.y_mean_) / self.y_std_).astype(np.float32)

    def predict_scores(self, X) -> np.ndarray:
        inputs = model_input(self.model, X)
        rows = len(next(iter(X.values())) if isinstance(X, dict) else X)
        # `predict` builds a dataset per call (~100 ms on CPU): one batch goes straight through instead
        out = (self.model.predict_on_batch(inputs) if rows <= PREDICT_BATCH
               else self.model.predict(inputs, batch_size=PREDICT_BATCH, verbose=0))
        out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out, dtype=np.float64)  # first head predicts
        if self.spec.task == "binary":
            p = out[:, 0]
            return np.column_stack([1.0 - p, p])
        if self.spec.task == "multiclass":
            return renormalise(out)  # float32 softmax rounding
        return out[:, 0] * self.y_std_ + self.y_mean_

    def save(self, path: str | Path) -> Path:
        """The model as `.keras` (weights, preprocessing vocabularies) and the member's state beside it."""
        path = Path(path).with_suffix(".keras")
        self.model.save(path)
        state = {"spec": self.spec.to_dict(), "batch_size": self.batch_size, "reduce_lr": self.reduce_lr,
                 "monitor": self.monitor, "mode": self.mode, "score_monitor": self.score_monitor, "best_step_": self.best_step_,
                 "validation_score_": self.validation_score_, "curves_": self.curves_,
                 "target_scale": [getattr(self, "y_mean_", 0.0), getattr(self, "y_std_", 1.0)]}
        _state_path(path).write_text(json.dumps(state))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KerasMember:
        path = Path(path).with_suffix(".keras")
        state = json.loads(_state_path(path).read_text())
        spec = ProblemSpec.from_dict(state["spec"])
        member = cls(keras().models.load_model(path, safe_mode=True), spec, state["batch_size"], state["reduce_lr"],
                     monitor=state["monitor"], mode=state["mode"], score_monitor=state["score_monitor"])
        member.best_step_, member.validation_score_ = state["best_step_"], state["validation_score_"]
        member.curves_ = state["curves_"]
        member.y_mean_, member.y_std_ = state["target_scale"]
        return member


def _state_path(model_path: Path) -> Path:
    return model_path.with_suffix(".member.json")


@lru_cache(maxsize=1)
def limit_threads(threads: int) -> None:
    """TensorFlow's thread pools for this process: set once, before its first operation (later, TensorFlow
    keeps the pools it started with)."""
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def release_memory() -> None:
    """Drop Keras' global graph state so a long study does not grow in RAM (`free_memory`: Keras
    collects the garbage itself; a second full collection would only cost another pass)."""
    keras().backend.clear_session(free_memory=True)
