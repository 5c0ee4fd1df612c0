"""The training loop every Keras family shares, as the book does it.

Last layer and loss by task, early stopping on the validation twin of the study metric with the
best weights restored, optional ReduceLROnPlateau, per-epoch Optuna pruning (optuna-integration's
KerasPruningCallback), per-epoch curves kept on the member, and memory released between trials.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np

from tuner._quiet import import_tensorflow
from tuner.metrics import METRICS
from tuner.models.base import Member, ProblemSpec


def keras():
    import_tensorflow()
    import keras as _keras

    return _keras


def output_head(spec: ProblemSpec):
    """The book's last layer by problem type: sigmoid / softmax / linear."""
    layers = keras().layers
    if spec.task == "binary":
        return layers.Dense(1, activation="sigmoid", dtype="float32")
    if spec.task == "multiclass":
        return layers.Dense(spec.n_classes, activation="softmax", dtype="float32")
    return layers.Dense(1, dtype="float32")


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
    return f"val_{metric.keras_name}", "max" if metric.direction == "maximize" else "min"


class KerasMember(Member):
    """A compiled Keras model behind the Member face; regression targets are standardised."""

    def __init__(self, model, spec: ProblemSpec, batch_size: int, reduce_lr: bool = False) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.batch_size = batch_size
        self.reduce_lr = reduce_lr

    def fit(self, X, y, X_val=None, y_val=None, trial: Any = None) -> KerasMember:
        k = keras()
        y = self._scale_target(y, fit=True)
        monitor, mode = monitored(self.spec)
        curves = self.curves_

        class Curves(k.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    curves.setdefault(key if key.startswith("val_") or key == "learning_rate" else f"train_{key}", []).append(float(value))

        callbacks = [Curves()]
        if X_val is None:
            self.model.fit(X, y, epochs=self.spec.max_epochs, batch_size=self.batch_size, callbacks=callbacks, verbose=0)
            self.best_step_ = self.spec.max_epochs
            return self
        callbacks.append(k.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=self.spec.patience, restore_best_weights=True))
        if self.reduce_lr:
            callbacks.append(k.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, patience=max(2, self.spec.patience // 2)))
        if trial is not None:
            from optuna_integration.keras import KerasPruningCallback

            callbacks.append(KerasPruningCallback(trial, monitor))
        self.model.fit(X, y, validation_data=(X_val, self._scale_target(y_val)), epochs=self.spec.max_epochs,
                       batch_size=self.batch_size, callbacks=callbacks, verbose=0)
        watched = curves.get(monitor, [])
        if watched:
            best = np.nanargmax(watched) if mode == "max" else np.nanargmin(watched)
            self.best_step_ = int(best) + 1
        return self

    def _scale_target(self, y: np.ndarray, fit: bool = False) -> np.ndarray:
        if self.spec.is_classification:
            return y
        if fit:
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y)) or 1.0
        return ((y - self.y_mean_) / self.y_std_).astype(np.float32)

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.predict(X, batch_size=1024, verbose=0), dtype=np.float64)
        if self.spec.task == "binary":
            p = out[:, 0]
            return np.column_stack([1.0 - p, p])
        if self.spec.task == "multiclass":
            return out / out.sum(axis=1, keepdims=True)  # float32 softmax rounding
        return out[:, 0] * self.y_std_ + self.y_mean_


def release_memory() -> None:
    """Drop Keras' global graph state so a long study does not grow in RAM."""
    keras().backend.clear_session(free_memory=True)
    gc.collect()
