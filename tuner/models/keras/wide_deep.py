"""Wide & deep for tables (book 7.3): a linear model over one-hot and crossed features, trained
jointly with an MLP; their logits are added before the last activation.

The wide part is linear over the one-hot codes of each categorical column and of each numeric
column's quantile bucket (an Embedding of width = outputs is exactly that), plus hashed crosses
(keras HashedCrossing) of every pair among the first `cross_columns` of those columns.
"""

from __future__ import annotations

from itertools import combinations

from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import (
    HEAD, KerasMember, keras, member_for, output_activation, output_units, training_params,
)
from tuner.models.keras.multi_input import categorical_embeddings


class WideDeepFamily(KerasFamily):
    name = "wide_deep"
    view = "columns"
    description = "Keras wide & deep: linear over one-hot and hashed crosses, plus an MLP, trained jointly"

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if "columns" not in spec.views:
            return "it needs a table (CSV / Parquet)"
        if not (spec.n_numeric or spec.categorical_sizes):
            return "the table has no numeric or categorical column (text alone: use sequence)"
        return None

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        params = {
            "cross_columns": trial.suggest_int("cross_columns", 0, 6),
            "hash_bins": trial.suggest_categorical("hash_bins", [64, 256, 1024]),
            "layers": trial.suggest_int("layers", 1, 3),
            "units": trial.suggest_int("units", 16, 256, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            **training_params(trial, spec),
        }
        if spec.categorical_sizes:
            params["category_dim"] = trial.suggest_int("category_dim", 2, 16, log=True)
        return params

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        k = keras()
        layers, ops = k.layers, k.ops
        outputs = output_units(spec)
        inputs, wide_columns, deep = {}, [], []
        if spec.categorical_sizes:
            codes = inputs["categorical"] = k.Input(shape=(len(spec.categorical_sizes),), dtype="int32", name="categorical")
            wide_columns += [(codes[:, i:i + 1], size) for i, size in enumerate(spec.categorical_sizes)]
            deep.append(categorical_embeddings(codes, spec.categorical_sizes, params["category_dim"]))
        if spec.n_numeric:
            inputs["numeric"] = k.Input(shape=(spec.n_numeric,), name="numeric")
            buckets = inputs["buckets"] = k.Input(shape=(spec.n_numeric,), dtype="int32", name="buckets")
            wide_columns += [(buckets[:, i:i + 1], size) for i, size in enumerate(spec.bucket_sizes)]
            deep.append(inputs["numeric"])
        wide = [layers.Embedding(size, outputs)(column) for column, size in wide_columns]
        crossed = wide_columns[:params["cross_columns"]]
        for (a, _), (b, _) in combinations(crossed, 2):
            cross = layers.HashedCrossing(num_bins=params["hash_bins"])((a, b))
            wide.append(layers.Embedding(params["hash_bins"], outputs)(cross))
        wide_logits = ops.sum(layers.Concatenate(axis=1)(wide), axis=1) if len(wide) > 1 else ops.sum(wide[0], axis=1)
        x = layers.Concatenate()(deep) if len(deep) > 1 else deep[0]
        for _ in range(params["layers"]):
            x = layers.Dense(params["units"], activation="relu")(x)
            if params["dropout"] > 0:
                x = layers.Dropout(params["dropout"])(x)
        logits = layers.Add()([wide_logits, layers.Dense(outputs, name=HEAD)(x)])
        return member_for(k.Model(inputs, output_activation(spec)(logits), name="wide_deep"), params, spec)


register(WideDeepFamily())
