"""Below every stage: user-facing errors, the study file's schema, metrics, devices, the in-trial deadline."""
