"""The book's densely connected network (chapter 3): stacked Dense layers on tabular features."""

from __future__ import annotations

from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, member_for, output_head, training_params


class DenseFamily(KerasFamily):
    name = "dense"
    picked = True
    description = "Keras MLP: layers, units, dropout, L1/L2, BatchNorm, optimizer, learning rate"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        params = {
            "layers": trial.suggest_int("layers", 1, 3),
            "units": trial.suggest_int("units", 16, 256, log=True),
            "activation": trial.suggest_categorical("activation", ["relu", "elu", "gelu"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "regularizer": trial.suggest_categorical("regularizer", ["none", "l1", "l2"]),
            "batch_norm": trial.suggest_categorical("batch_norm", [False, True]),
            **training_params(trial, spec),
        }
        if params["regularizer"] != "none":
            params["regularization"] = trial.suggest_float("regularization", 1e-6, 1e-2, log=True)
        return params

    def default_params(self, spec: ProblemSpec) -> dict:
        """The book's first network (chapter 4): two Dense(64, relu) layers, RMSprop at 1e-3, batches of 32."""
        return {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.0, "regularizer": "none",
                "batch_norm": False, "optimizer": "rmsprop", "learning_rate": 1e-3, "batch_size": 32}

    def portfolio(self, spec: ProblemSpec) -> dict[str, dict]:
        """The book's network and AutoGluon's first learned torch MLP (tabular/configs/zeroshot/
        zeroshot_portfolio_2023.py, r79): 108 ELU units with batch norm, dropout 0.10, Adam at 0.0027;
        its 4 layers cut to this space's 3, its batches (AutoGluon sizes them itself) the space's largest."""
        return {"default": self.default_params(spec),
                "autogluon r79": {"layers": 3, "units": 108, "activation": "elu", "dropout": 0.1008,
                                  "regularizer": "none", "batch_norm": True, "optimizer": "adam",
                                  "learning_rate": 0.002736, "batch_size": 128}}

    def deep_part_params(self) -> dict:
        """The network a wide-and-deep blend falls back to: the book's first one, with a little
        dropout and Adam."""
        return {"layers": 2, "units": 64, "activation": "relu", "dropout": 0.1, "regularizer": "none",
                "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32}

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        k = keras()
        layers = k.layers
        regularizer = None
        if params["regularizer"] != "none":
            regularizer = getattr(k.regularizers, params["regularizer"].upper())(params["regularization"])
        inputs = k.Input(shape=(spec.n_features,))
        x = inputs
        for _ in range(params["layers"]):
            x = layers.Dense(params["units"], kernel_regularizer=regularizer,
                             use_bias=not params["batch_norm"])(x)
            if params["batch_norm"]:
                x = layers.BatchNormalization()(x)
            x = layers.Activation(params["activation"])(x)
            if params["dropout"] > 0:
                x = layers.Dropout(params["dropout"])(x)
        return member_for(k.Model(inputs, output_head(spec)(x), name="dense"), params, spec)


register(DenseFamily())
