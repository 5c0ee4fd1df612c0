"""The book's dense network made strong on tables, after RealMLP-TD (Holzmüller et al. 2024, pytabkit).

Numbers are centred on their training median, divided by their interquartile range and smoothly
clipped (x / sqrt(1 + (x/3)^2)); each then gets a periodic PBLD embedding (cosines of 16 learned
frequencies through a small per-feature linear map, the number itself kept beside it). Categorical
columns of at most 9 codes are one-hot, wider ones embedded in 8 dimensions. A learnable per-feature
scale (initialised to 1) sits in front of 3 x 256 SELU (regression: mish) layers with dropout 0.15,
trained with AdamW (beta_2 0.95, weight decay 0.02) under a cosine learning-rate decay, with label
smoothing 0.1 for classification; text columns enter as a bag of words. Every ingredient is a
param, so a benchmark keeps only what pays.

pytabkit parametrises weights NTK-style, where its lr 0.04 (regression 0.2) moves a 256-wide layer as
much as about 0.04 / sqrt(256) = 0.0025 (regression 0.0125) moves Keras' standard layers: those are
the defaults here. Its per-parameter learning-rate factors, parametric activations and dropout and
weight-decay schedules are left out.

The layers are Keras classes registered under the package `tuner`, so a saved `.keras` model loads
with `safe_mode=True`; they are defined on first use, since importing Keras starts TensorFlow.
"""

from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, _metric_twin, keras, output_head
from tuner.models.registry import register

MAX_ONE_HOT = 9  # RealMLP-TD's max_one_hot_cat_size: wider categorical columns are embedded
CATEGORY_DIM = 8  # RealMLP-TD's embedding_size
FREQUENCIES = 16  # PBLD: plr_hidden_1
EMBEDDING_DIM = 4  # PBLD: plr_hidden_2, the number itself included
FREQUENCY_SCALE = 0.1  # PBLD: plr_sigma
TEXT_TERMS = 256  # text columns as a bag of this many words (TF-IDF weights do not reload when padded)
SCALER = "robust_scale"  # the layer whose statistics `RealMLPMember.fit` sets from the training rows


def robust_statistics(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the median and 1 / IQR (1 / half the range where the IQR is 0, 0 for a constant
    column), as pytabkit's median_center and robust_scale compute them."""
    numbers = np.asarray(numbers, dtype=np.float64)
    spread = np.quantile(numbers, 0.75, axis=0) - np.quantile(numbers, 0.25, axis=0)
    flat = spread == 0
    spread[flat] = 0.5 * (numbers.max(axis=0) - numbers.min(axis=0))[flat]
    factor = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
    return np.median(numbers, axis=0).astype(np.float32), factor.astype(np.float32)


@lru_cache(maxsize=1)
def custom_objects() -> SimpleNamespace:
    """The family's Keras layers and loss, defined and registered once Keras is imported."""
    k = keras()
    ops = k.ops
    serializable = k.saving.register_keras_serializable(package="tuner")

    @serializable
    class RobustScale(k.layers.Layer):
        """(x - median) * factor, then x / sqrt(1 + (x/3)^2) when `clip`; the statistics are non-trainable
        weights set from the training rows (`set_statistics`), so the saved model carries them."""

        def __init__(self, clip: bool = True, **kwargs):
            super().__init__(**kwargs)
            self.clip = clip

        def build(self, input_shape):
            columns = (input_shape[-1],)
            self.center = self.add_weight(shape=columns, initializer="zeros", trainable=False, name="center")
            self.factor = self.add_weight(shape=columns, initializer="ones", trainable=False, name="factor")

        def set_statistics(self, numbers: np.ndarray) -> None:
            center, factor = robust_statistics(numbers)
            self.center.assign(center)
            self.factor.assign(factor)

        def call(self, x):
            x = (x - self.center) * self.factor
            return x / ops.sqrt(1.0 + ops.square(x / 3.0)) if self.clip else x

        def get_config(self):
            return {**super().get_config(), "clip": self.clip}

    @serializable
    class FeatureScale(k.layers.Layer):
        """A learned weight per input feature (a diagonal layer), initialised to 1."""

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    @serializable
    class PeriodicEmbedding(k.layers.Layer):
        """PBLD: per feature, cos(2 pi w x + b) over `frequencies` learned w, b, a linear map to `dim` - 1
        values, and x itself beside them: N x F numbers in, N x (F * dim) out."""

        def __init__(self, frequencies: int = FREQUENCIES, dim: int = EMBEDDING_DIM,
                     scale: float = FREQUENCY_SCALE, **kwargs):
            super().__init__(**kwargs)
            self.frequencies, self.dim, self.scale = frequencies, dim, scale

        def build(self, input_shape):
            features, bound = input_shape[-1], 1.0 / math.sqrt(self.frequencies)
            init = k.initializers
            self.frequency = self.add_weight(shape=(features, self.frequencies),
                                             initializer=init.RandomNormal(stddev=self.scale), name="frequency")
            self.phase = self.add_weight(shape=(features, self.frequencies),
                                         initializer=init.RandomUniform(-math.pi, math.pi), name="phase")
            self.kernel = self.add_weight(shape=(features, self.frequencies, self.dim - 1),
                                          initializer=init.RandomUniform(-bound, bound), name="kernel")
            self.bias = self.add_weight(shape=(features, self.dim - 1),
                                        initializer=init.RandomUniform(-bound, bound), name="bias")

        def call(self, x):
            x = ops.expand_dims(x, -1)  # N x F x 1
            periodic = ops.cos(2.0 * math.pi * x * self.frequency + self.phase)
            linear = ops.einsum("nfk,fkd->nfd", periodic, self.kernel) + self.bias
            embedded = ops.concatenate([linear, x], axis=-1)
            return ops.reshape(embedded, (-1, embedded.shape[1] * self.dim))

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[-1] * self.dim)

        def get_config(self):
            return {**super().get_config(), "frequencies": self.frequencies, "dim": self.dim, "scale": self.scale}

    @serializable
    class SmoothedSparseCrossentropy(k.losses.Loss):
        """Categorical cross-entropy with label smoothing on integer labels (Keras' sparse loss has none)."""

        def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.label_smoothing = label_smoothing

        def call(self, y_true, y_pred):
            labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
            return k.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.label_smoothing)

        def get_config(self):
            return {**super().get_config(), "label_smoothing": self.label_smoothing}

    return SimpleNamespace(RobustScale=RobustScale, FeatureScale=FeatureScale, PeriodicEmbedding=PeriodicEmbedding,
                           SmoothedSparseCrossentropy=SmoothedSparseCrossentropy)


def realmlp_loss(spec: ProblemSpec, label_smoothing: float):
    """The task's loss, classification smoothed by `label_smoothing`."""
    losses = keras().losses
    if spec.task == "binary":
        return losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if spec.task == "multiclass":
        return custom_objects().SmoothedSparseCrossentropy(label_smoothing=label_smoothing)
    return losses.MeanSquaredError()


def compile_realmlp(model, spec: ProblemSpec, params: dict, steps: int) -> None:
    """AdamW with RealMLP-TD's beta_2 0.95, the learning rate decayed to 0 over `steps` on a cosine
    (schedule `cosine`) or flat, and the study metric's validation twin."""
    k = keras()
    rate = params["learning_rate"]
    if params["schedule"] == "cosine":
        rate = k.optimizers.schedules.CosineDecay(rate, decay_steps=max(steps, 1))
    optimizer = k.optimizers.AdamW(learning_rate=rate, weight_decay=params["weight_decay"], beta_2=0.95)
    twin = _metric_twin(spec)
    model.compile(optimizer=optimizer, loss=realmlp_loss(spec, params.get("label_smoothing", 0.0)),
                  metrics=[twin] if twin is not None else [])


class RealMLPMember(KerasMember):
    """A KerasMember that sets its robust scaling from the training rows and compiles once it knows how
    many steps its learning-rate schedule spans."""

    params: dict

    def fit(self, X, y, X_val=None, y_val=None, trial=None) -> RealMLPMember:
        if "numeric" in X and any(layer.name == SCALER for layer in self.model.layers):
            self.model.get_layer(SCALER).set_statistics(X["numeric"])
        rows = len(next(iter(X.values())))
        compile_realmlp(self.model, self.spec, self.params, self.spec.max_epochs * math.ceil(rows / self.batch_size))
        return super().fit(X, y, X_val, y_val, trial=trial)

    @classmethod
    def load(cls, path) -> RealMLPMember:
        custom_objects()  # registered before Keras reads the model
        return super().load(path)


class RealMLPFamily(KerasFamily):
    name = "realmlp"
    view = "columns"
    description = "Keras RealMLP-TD: robust scaling, periodic embeddings, front scale, label smoothing, AdamW"
    # its scaling is fitted by its own member and its optimizer is not one a blend compiles
    lends_deep_part: ClassVar[bool] = False

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if "columns" not in spec.views:
            return "it needs a table (CSV / Parquet)"
        if not spec.n_numeric and not spec.categorical_sizes:
            return "the table has no numeric or categorical column; use sequence or dense for text alone"
        return None

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        params: dict = {
            "layers": trial.suggest_int("layers", 1, 4),
            "units": trial.suggest_int("units", 32, 512, log=True),
            "activation": trial.suggest_categorical("activation", ["selu", "mish", "relu"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
            "schedule": trial.suggest_categorical("schedule", ["cosine", "flat"]),
            "front_scale": trial.suggest_categorical("front_scale", [True, False]),
            "batch_size": spec.batch_size or trial.suggest_categorical("batch_size", [64, 128, 256, 512]),
        }
        if spec.is_classification:
            params["label_smoothing"] = trial.suggest_categorical("label_smoothing", [0.1, 0.0])
        if spec.n_numeric:
            params["robust_scale"] = trial.suggest_categorical("robust_scale", [True, False])
            params["smooth_clip"] = trial.suggest_categorical("smooth_clip", [True, False])
            params["periodic_embedding"] = trial.suggest_categorical("periodic_embedding", [True, False])
        if any(size > MAX_ONE_HOT for size in spec.categorical_sizes):
            params["embed_categories"] = trial.suggest_categorical("embed_categories", [True, False])
        return params

    def default_params(self, spec: ProblemSpec) -> dict:
        """pytabkit's RealMLP_TD_CLASS / RealMLP_TD_REG, its learning rate carried to standard weights."""
        regression = spec.task == "regression"
        return self._applicable({
            "layers": 3, "units": 256, "activation": "mish" if regression else "selu", "dropout": 0.15,
            "learning_rate": 0.0125 if regression else 0.0025, "weight_decay": 0.02, "schedule": "cosine",
            "front_scale": True, "batch_size": spec.batch_size or 256, "label_smoothing": 0.1,
            "robust_scale": True, "smooth_clip": True, "periodic_embedding": True, "embed_categories": True}, spec)

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """RealMLP-TD, then pytabkit's simpler RealMLP_TD_S: no periodic embeddings, dropout or weight
        decay (1e-5, the space's edge), lr 0.04 (regression 0.07) in NTK terms."""
        default = self.default_params(spec)
        simple = {**default, "dropout": 0.0, "weight_decay": 1e-5, "periodic_embedding": False, "embed_categories": False,
                  "learning_rate": 0.0045 if spec.task == "regression" else 0.0025}
        return {"default": default, "pytabkit RealMLP_TD_S": self._applicable(simple, spec)}

    def _applicable(self, params: dict, spec: ProblemSpec) -> dict:
        """`params` cut to the keys this problem's space suggests, in the space's order."""
        keys = ["layers", "units", "activation", "dropout", "learning_rate", "weight_decay", "schedule",
                "front_scale", "batch_size"]
        keys += ["label_smoothing"] if spec.is_classification else []
        keys += ["robust_scale", "smooth_clip", "periodic_embedding"] if spec.n_numeric else []
        keys += ["embed_categories"] if any(size > MAX_ONE_HOT for size in spec.categorical_sizes) else []
        return {key: params[key] for key in keys}

    def build(self, params: dict, spec: ProblemSpec) -> RealMLPMember:
        k, objects = keras(), custom_objects()
        layers = k.layers
        inputs, features, adapt = {}, [], ()
        if spec.n_numeric:
            inputs["numeric"] = k.Input(shape=(spec.n_numeric,), name="numeric")
            numbers = inputs["numeric"]
            if params["robust_scale"] or params["smooth_clip"]:
                numbers = objects.RobustScale(clip=params["smooth_clip"], name=SCALER)(numbers)
            if params["periodic_embedding"]:
                numbers = objects.PeriodicEmbedding(name="periodic_embedding")(numbers)
            features.append(numbers)
        if spec.categorical_sizes:
            inputs["categorical"] = k.Input(shape=(len(spec.categorical_sizes),), dtype="int32", name="categorical")
            features += encoded_categories(inputs["categorical"], spec.categorical_sizes,
                                           params.get("embed_categories", False))
        if "text" in spec.views:
            inputs["text"] = k.Input(shape=(1,), dtype="string", name="text")
            vectorizer = layers.TextVectorization(max_tokens=TEXT_TERMS, output_mode="multi_hot", pad_to_max_tokens=True)
            adapt = ((vectorizer, "text"),)
            # Keras infers N x 1 x terms for N x 1 strings, and computes N x terms
            features.append(layers.Reshape((TEXT_TERMS,))(vectorizer(inputs["text"])))
        x = layers.Concatenate()(features) if len(features) > 1 else features[0]
        if params["front_scale"]:
            x = objects.FeatureScale(name="front_scale")(x)
        for _ in range(params["layers"]):
            x = layers.Dense(params["units"], activation=params["activation"])(x)
            if params["dropout"] > 0:
                x = layers.Dropout(params["dropout"])(x)
        model = k.Model(inputs, output_head(spec)(x), name="realmlp")
        # ReduceLROnPlateau sets a number as the learning rate: only without a schedule
        reduce_lr = spec.reduce_lr == "on" and params["schedule"] == "flat"
        member = RealMLPMember(model, spec, batch_size=params["batch_size"], reduce_lr=reduce_lr, adapt=adapt)
        member.params = params
        return member


def encoded_categories(codes, sizes: tuple[int, ...], embed: bool) -> list:
    """Each categorical column one-hot, or (`embed`, more than MAX_ONE_HOT codes) embedded in CATEGORY_DIM."""
    layers = keras().layers
    encoded = []
    for i, size in enumerate(sizes):
        column = codes[:, i:i + 1]
        if embed and size > MAX_ONE_HOT:
            encoded.append(layers.Flatten()(layers.Embedding(size, CATEGORY_DIM)(column)))
        else:
            encoded.append(layers.CategoryEncoding(num_tokens=size, output_mode="one_hot")(column))
    return encoded


register(RealMLPFamily())
