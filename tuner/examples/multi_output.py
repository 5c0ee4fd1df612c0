"""A multi-output custom model with weighted losses (book 7.1.3), as a custom-family builder.

A small convnet predicts the class from its last block and, through an auxiliary head, from its
first block; the auxiliary loss (weight searched) pushes the early features to be useful. Every
head learns the study target; the first head is the prediction the study metric scores.
"""

from __future__ import annotations

from tuner.models.keras.training import keras


def build_with_auxiliary_head(trial, inputs):
    k = keras()
    layers = k.layers
    filters = trial.suggest_int("filters", 8, 32, log=True)
    images = k.Input(shape=inputs.shape)
    early = layers.Conv2D(filters, 3, padding="same", activation="relu")(images)
    x = layers.MaxPooling2D(2, padding="same")(early)
    x = layers.Conv2D(filters * 2, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    main = layers.Dense(inputs.n_classes, activation="softmax", dtype="float32", name="main")(x)
    auxiliary = layers.Dense(inputs.n_classes, activation="softmax", dtype="float32", name="auxiliary")(
        layers.GlobalAveragePooling2D()(early))
    model = k.Model(images, [main, auxiliary], name="digits_auxiliary")
    model.compile(optimizer=k.optimizers.RMSprop(trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)),
                  loss=["sparse_categorical_crossentropy", "sparse_categorical_crossentropy"],
                  loss_weights=[1.0, trial.suggest_float("auxiliary_weight", 0.05, 0.5)],
                  metrics=[["accuracy"], []])
    return model
