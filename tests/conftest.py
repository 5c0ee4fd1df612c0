import tuner._quiet  # noqa: F401  (quiet TensorFlow before anything imports it)
