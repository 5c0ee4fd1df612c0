"""The book's convnets (chapters 5 and 7) on N x H x W x C images, sized so 8x8 inputs still fit.

Each block is a convolution (plain or depthwise separable, or an inception-style set of parallel
branches), optional BatchNorm and a residual shortcut (1x1 projection when channels differ), then
halves the grid by max pooling or a strided convolution while the grid is larger than 1x1.
"""

from __future__ import annotations

from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, member_for, output_head, training_params


class ConvnetFamily(KerasFamily):
    name = "convnet"
    picked = True  # on images only (unsupported_reason)
    view = "image"
    description = "Keras convnet: Conv2D/SeparableConv2D, blocks, pooling or strides, BatchNorm, residual, inception"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {
            "conv": trial.suggest_categorical("conv", ["conv2d", "separable"]),
            "filters": trial.suggest_int("filters", 8, 64, log=True),
            "kernel_size": trial.suggest_categorical("kernel_size", [3, 5]),
            "blocks": trial.suggest_int("blocks", 1, 3),
            "downsample": trial.suggest_categorical("downsample", ["max_pool", "strided"]),
            "batch_norm": trial.suggest_categorical("batch_norm", [False, True]),
            "residual": trial.suggest_categorical("residual", [False, True]),
            "inception": trial.suggest_categorical("inception", [False, True]),
            "head": trial.suggest_categorical("head", ["global_average", "flatten"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "dense_units": trial.suggest_categorical("dense_units", [0, 32, 64, 128]),
            **training_params(trial, spec),
        }

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if spec.image_shape is None:
            return "it needs images (N x H x W x C arrays in an NPZ, or builtin:digits)"
        return None

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        k = keras()
        layers = k.layers
        inputs = k.Input(shape=spec.image_shape)
        x = inputs
        grid = min(spec.image_shape[:2])
        for block in range(params["blocks"]):
            filters = params["filters"] * 2 ** block
            shortcut = x
            x = (_inception(x, filters, params) if params["inception"]
                 else _conv(params, filters, params["kernel_size"])(x))
            if params["batch_norm"]:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
            if params["residual"]:
                if shortcut.shape[-1] != x.shape[-1]:
                    shortcut = layers.Conv2D(x.shape[-1], 1)(shortcut)
                x = layers.Add()([x, shortcut])
            if grid > 1:  # never pool a 1x1 grid away
                x = (layers.MaxPooling2D(2, padding="same")(x) if params["downsample"] == "max_pool"
                     else _conv(params, filters, 3, strides=2)(x))
                grid = (grid + 1) // 2
        x = layers.GlobalAveragePooling2D()(x) if params["head"] == "global_average" else layers.Flatten()(x)
        if params["dense_units"]:
            x = layers.Dense(params["dense_units"], activation="relu")(x)
        if params["dropout"] > 0:
            x = layers.Dropout(params["dropout"])(x)
        return member_for(k.Model(inputs, output_head(spec)(x), name="convnet"), params, spec)


def _conv(params: dict, filters: int, kernel_size: int, strides: int = 1):
    layers = keras().layers
    kind = layers.SeparableConv2D if params["conv"] == "separable" else layers.Conv2D
    return kind(filters, kernel_size, strides=strides, padding="same", use_bias=not params["batch_norm"])


def _inception(x, filters: int, params: dict):
    """Parallel 1x1, 1x1->kxk and 3x3 max-pool->1x1 branches, concatenated (book 7.1.4)."""
    layers = keras().layers
    branch = max(4, filters // 4)
    one = layers.Conv2D(branch * 2, 1, padding="same", activation="relu")(x)
    wide = _conv(params, branch, params["kernel_size"])(layers.Conv2D(branch, 1, activation="relu")(x))
    pooled = layers.Conv2D(branch, 1, activation="relu")(layers.MaxPooling2D(3, strides=1, padding="same")(x))
    return layers.Concatenate()([one, wide, pooled])


register(ConvnetFamily())
