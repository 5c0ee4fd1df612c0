"""A new Keras family in one module, as a worked example: a network with one hidden layer.

Saved as tuner/models/one_layer.py it is a family like the others (see knn_family.py). Subclassing
`KerasFamily` is all it takes to be a Keras family: seeding, memory release, per-epoch curves,
early stopping, pruning, saving and its place last in the portfolio come with the base class and
`member_for`; the module writes only its search space, its default and its build.
"""

from __future__ import annotations

from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, member_for, output_head, training_params
from tuner.models.registry import register


class OneLayerFamily(KerasFamily):
    name = "one_layer"
    description = "Keras network with one hidden Dense layer: units, dropout, optimizer, learning rate"

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        return {"units": trial.suggest_int("units", 8, 64, log=True),
                "dropout": trial.suggest_float("dropout", 0.0, 0.3),
                **training_params(trial, spec)}

    def default_params(self, spec: ProblemSpec) -> dict:
        return {"units": 32, "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32}

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        layers = keras().layers
        inputs = keras().Input(shape=(spec.n_features,))
        hidden = layers.Dropout(params["dropout"])(layers.Dense(params["units"], activation="relu")(inputs))
        return member_for(keras().Model(inputs, output_head(spec)(hidden), name="one_layer"), params, spec)


register(OneLayerFamily())
