"""The book's variational autoencoder (8.4) as a custom-family builder, small enough for 8x8 digits.

The KL divergence and the reconstruction error are added with `add_loss` inside a custom layer, so
the model compiles without a loss and the study minimises its `val_loss` (see vae-digits.yaml).
Images arrive standardised (the `image` view), so reconstruction is measured with squared error.
"""

from __future__ import annotations

from tuner.models.keras.training import keras

k = keras()


@k.saving.register_keras_serializable(package="tuner.examples")
class Sampling(k.layers.Layer):
    """z = mean + exp(log_var / 2) * epsilon: the reparameterisation trick."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = k.random.SeedGenerator(0)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = k.random.normal(k.ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + k.ops.exp(0.5 * z_log_var) * epsilon


@k.saving.register_keras_serializable(package="tuner.examples")
class VAELoss(k.layers.Layer):
    """Adds reconstruction + weighted KL loss; passes the reconstruction through."""

    def __init__(self, kl_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight

    def call(self, inputs):
        images, decoded, z_mean, z_log_var = inputs
        reconstruction = k.ops.mean(k.ops.sum(k.ops.square(images - decoded), axis=(1, 2, 3)))
        kl = -0.5 * k.ops.mean(k.ops.sum(1 + z_log_var - k.ops.square(z_mean) - k.ops.exp(z_log_var), axis=1))
        self.add_loss(reconstruction + self.kl_weight * kl)
        return decoded

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight}


def build_vae(trial, inputs):
    """Conv encoder -> (z_mean, z_log_var) -> sampled z -> transposed-conv decoder."""
    layers = k.layers
    height, width, channels = inputs.shape
    filters = trial.suggest_int("filters", 8, 32, log=True)
    latent_dim = trial.suggest_int("latent_dim", 2, 8)
    images = k.Input(shape=inputs.shape)
    x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(images)
    x = layers.Flatten()(x)
    x = layers.Dense(trial.suggest_int("hidden", 16, 128, log=True), activation="relu")(x)
    z_mean, z_log_var = layers.Dense(latent_dim)(x), layers.Dense(latent_dim)(x)
    z = Sampling()([z_mean, z_log_var])
    y = layers.Dense((height // 2) * (width // 2) * filters, activation="relu")(z)
    y = layers.Reshape((height // 2, width // 2, filters))(y)
    y = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(y)
    decoded = layers.Conv2D(channels, 3, padding="same")(y)
    outputs = VAELoss(kl_weight=trial.suggest_float("kl_weight", 0.1, 1.0))([images, decoded, z_mean, z_log_var])
    model = k.Model(images, outputs, name="vae")
    model.compile(optimizer=k.optimizers.Adam(trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)))
    return model
