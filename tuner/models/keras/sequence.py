"""The book's sequence models (chapter 6): RNNs, 1D convnets and CNN + RNN on text, tokens or series.

The view follows the data: a numeric series (N x T x F) feeds the encoder directly; integer token
ids (`data.kind: tokens`) go through an Embedding; a table's text column is tokenised by a
TextVectorization layer inside the model, adapted on training rows, so a saved model reads raw strings.
"""

from __future__ import annotations

from tuner.models.registry import register
from tuner.models.base import ProblemSpec
from tuner.models.keras.family import KerasFamily
from tuner.models.keras.training import KerasMember, keras, member_for, output_head, training_params

INPUT_VIEWS = ("sequence", "tokens", "text")  # in order of preference when data offers several


class SequenceFamily(KerasFamily):
    name = "sequence"
    picked = True  # on text, token ids and series only (unsupported_reason)
    view = "sequence"
    description = "Keras RNN / 1D convnet: LSTM or GRU, units, stacked, bidirectional, dropouts, Conv1D front end"

    def view_for(self, spec: ProblemSpec) -> str:
        return next((v for v in INPUT_VIEWS if v in spec.views), self.view)

    def unsupported_reason(self, spec: ProblemSpec) -> str | None:
        if not any(v in spec.views for v in INPUT_VIEWS):
            return ("it needs a text column, token ids (`data.kind: tokens`) or a series "
                    "(N x T x F NPZ)")
        return None

    def search_space(self, trial, spec: ProblemSpec) -> dict:
        view = self.view_for(spec)
        params: dict = {}
        if view == "text":
            params["max_tokens"] = trial.suggest_categorical("max_tokens", [1000, 5000, 20000])
            params["sequence_length"] = trial.suggest_categorical("sequence_length", [16, 32, 64])
        if view != "sequence":
            params["embedding_dim"] = trial.suggest_int("embedding_dim", 8, 128, log=True)
        params.update(encoder_space(trial))
        params.update(training_params(trial, spec))
        return params

    def build(self, params: dict, spec: ProblemSpec) -> KerasMember:
        k = keras()
        view = self.view_for(spec)
        adapt: tuple = ()
        if view == "text":
            inputs = k.Input(shape=(1,), dtype="string", name="text")
            x, vectorizer = embed_text(inputs, params)
            adapt = ((vectorizer, None),)
            steps = params["sequence_length"]
        elif view == "tokens":
            inputs = k.Input(shape=spec.sequence_shape, dtype="int32", name="tokens")
            x = k.layers.Embedding(spec.vocabulary_size, params["embedding_dim"], mask_zero=masks(params))(inputs)
            steps = spec.sequence_shape[0]
        else:
            inputs = k.Input(shape=spec.sequence_shape, name="sequence")
            x, steps = inputs, spec.sequence_shape[0]
        x = encode_steps(x, params, steps)
        if params["dropout"] > 0:
            x = k.layers.Dropout(params["dropout"])(x)
        return member_for(k.Model(inputs, output_head(spec)(x), name="sequence"), params, spec, adapt=adapt)


def encoder_space(trial) -> dict:
    """The encoder's hyperparameters; RNN-only ones are suggested only for an RNN."""
    params = {
        "encoder": trial.suggest_categorical("encoder", ["lstm", "gru", "conv1d"]),
        "units": trial.suggest_int("units", 8, 128, log=True),
        "stacked": trial.suggest_int("stacked", 1, 2),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }
    if params["encoder"] != "conv1d":
        params["bidirectional"] = trial.suggest_categorical("bidirectional", [False, True])
        params["recurrent_dropout"] = trial.suggest_float("recurrent_dropout", 0.0, 0.4)
        params["conv_front"] = trial.suggest_categorical("conv_front", [False, True])
    return params


def masks(params: dict) -> bool:
    """Mask padding only where every layer after the Embedding honours masks (RNNs, not Conv1D)."""
    return params["encoder"] != "conv1d" and not params.get("conv_front", False)


def embed_text(inputs, params: dict, prefix: str = ""):
    """Raw strings -> token ids -> vectors; returns the vectors and the vectorizer to adapt."""
    layers = keras().layers
    vectorizer = layers.TextVectorization(max_tokens=params[f"{prefix}max_tokens"],
                                          output_sequence_length=params[f"{prefix}sequence_length"])
    x = layers.Embedding(params[f"{prefix}max_tokens"], params[f"{prefix}embedding_dim"],
                         mask_zero=masks(params))(vectorizer(inputs))
    return x, vectorizer


def encode_steps(x, params: dict, steps: int):
    """N x T x D -> N x units: Conv1D blocks, or an optional Conv1D + pooling front end and (stacked) RNNs."""
    layers = keras().layers
    if params["encoder"] == "conv1d":
        for _ in range(params["stacked"]):
            x = layers.Conv1D(params["units"], 5, padding="same", activation="relu")(x)
            if steps >= 4:
                x = layers.MaxPooling1D(2)(x)
                steps //= 2
        return layers.GlobalMaxPooling1D()(x)
    if params["conv_front"]:
        x = layers.Conv1D(params["units"], 5, padding="same", activation="relu")(x)
        if steps >= 4:
            x = layers.MaxPooling1D(2)(x)
    rnn = layers.LSTM if params["encoder"] == "lstm" else layers.GRU
    for depth in range(params["stacked"]):
        cell = rnn(params["units"], dropout=params["dropout"], recurrent_dropout=params["recurrent_dropout"],
                   return_sequences=depth < params["stacked"] - 1)
        x = layers.Bidirectional(cell)(x) if params["bidirectional"] else cell(x)
    return x


register(SequenceFamily())
