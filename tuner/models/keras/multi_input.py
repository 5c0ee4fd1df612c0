"""The book's functional multi-input model (7.1): one branch per kind of column, concatenated.

Numbers go through a Dense layer, each categorical column through its own Embedding, and the text
column through TextVectorization + Embedding + a sequence encoder; the branches meet in a dense head.
"""

from __future__ import annotations

from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, member_for, output_head, training_params
from tuner.models.keras.sequence import embed_text, encode_steps


def input_kinds(spec: ProblemSpec) -> list[str]:
    """The kinds of column this table has, as named in the `columns` view."""
    kinds = ["numeric"] if spec.n_numeric else []
    kinds += ["categorical"] if spec.categorical_sizes else []
    return kinds + (["text"] if "text" in spec.views else [])


def categorical_embeddings(codes, sizes: tuple[int, ...], dim: int):
    """One Embedding per categorical column (codes sliced out of the N x columns input), flattened."""
    layers = keras().layers
    embedded = [layers.Flatten()(layers.Embedding(size, min(dim, size))(codes[:, i:i + 1]))
                for i, size in enumerate(sizes)]
    return embedded[0] if len(embedded) == 1 else layers.Concatenate()(embedded)


class MultiInputFamily(KerasFamily):
    name = "multi_input"
    view = "columns"
    description = "Keras functional model: dense numbers, categorical embeddings and a text encoder, concatenated"

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if "columns" not in spec.views:
            return "it needs a table (CSV / Parquet)"
        if len(input_kinds(spec)) < 2:
            return "the table has one kind of column only; mix numbers, categories or text, or use dense"
        return None

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        kinds = input_kinds(spec)
        params: dict = {}
        if "numeric" in kinds:
            params["numeric_units"] = trial.suggest_int("numeric_units", 8, 128, log=True)
        if "categorical" in kinds:
            params["category_dim"] = trial.suggest_int("category_dim", 2, 16, log=True)
        if "text" in kinds:
            params["text_max_tokens"] = trial.suggest_categorical("text_max_tokens", [1000, 5000, 20000])
            params["text_sequence_length"] = trial.suggest_categorical("text_sequence_length", [16, 32, 64])
            params["text_embedding_dim"] = trial.suggest_int("text_embedding_dim", 8, 64, log=True)
            params["encoder"] = trial.suggest_categorical("encoder", ["gru", "conv1d"])
            params["units"] = trial.suggest_int("units", 8, 64, log=True)
        params["head_units"] = trial.suggest_int("head_units", 16, 128, log=True)
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
        params.update(training_params(trial, spec))
        return params

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        k = keras()
        layers = k.layers
        inputs, branches, adapt = {}, [], ()
        if spec.n_numeric:
            inputs["numeric"] = k.Input(shape=(spec.n_numeric,), name="numeric")
            branches.append(layers.Dense(params["numeric_units"], activation="relu")(inputs["numeric"]))
        if spec.categorical_sizes:
            inputs["categorical"] = k.Input(shape=(len(spec.categorical_sizes),), dtype="int32", name="categorical")
            branches.append(categorical_embeddings(inputs["categorical"], spec.categorical_sizes, params["category_dim"]))
        if "text" in spec.views:
            inputs["text"] = k.Input(shape=(1,), dtype="string", name="text")
            text_params = {"encoder": params["encoder"], "units": params["units"], "stacked": 1, "dropout": 0.0,
                           "bidirectional": False, "recurrent_dropout": 0.0, "conv_front": False}
            steps, vectorizer = embed_text(inputs["text"], {**params, **text_params}, prefix="text_")
            adapt = ((vectorizer, "text"),)
            branches.append(encode_steps(steps, text_params, params["text_sequence_length"]))
        x = layers.Concatenate()(branches) if len(branches) > 1 else branches[0]
        x = layers.Dense(params["head_units"], activation="relu")(x)
        if params["dropout"] > 0:
            x = layers.Dropout(params["dropout"])(x)
        return member_for(k.Model(inputs, output_head(spec)(x), name="multi_input"), params, spec, adapt=adapt)


register(MultiInputFamily())
