"""The exported model's code: MLflow runs this file to load an export ("models from code").

`tuner export` passes this file as `python_model=`; MLflow copies it into the model folder and
executes it at load time, so nothing pickles the ensemble. `load_context` reads the blend folder
(`context.artifacts["ensemble"]`, members in their own formats) back into a `FittedEnsemble`,
whose preprocessor turns raw rows into each member's features, and checks that the saved
`model_config` (blend kind, members, weights, input columns) describes that blend. Do not import
this module: it registers the model with `mlflow.models.set_model` when executed.

Inputs: tables are a DataFrame of the raw training columns (strings for categoricals and text,
missing values allowed anywhere). Images, series and token ids arrive flattened, one column per
value (a DataFrame, or an (N, values) array) and are reshaped to the training shape here.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from tuner.ensemble import FittedEnsemble
from tuner.errors import TunerError

ARTIFACT = "ensemble"


class EnsembleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.ensemble = FittedEnsemble.load(context.artifacts[ARTIFACT])
        check_config(context.model_config, self.ensemble)

    # MLflow reads this hint only to see that it carries no schema (without a hint it warns on every
    # load); the saved signature validates the input, and array models get the (N, values) ndarray
    # their tensor signature describes.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = self.ensemble.predict_frame(raw_rows(self.ensemble, model_input))
        return frame.infer_objects()  # labels as int / str columns, not object


def check_config(config: dict | None, ensemble: FittedEnsemble) -> None:
    """Refuse a `model_config` that disagrees with the blend artifact (edited MLmodel, override at load).

    Exports made before tuner wrote a `model_config` carry none and load unchecked.
    """
    if not config:
        return
    actual = ensemble.serving_config()
    wrong = [key for key in sorted(set(config) | set(actual)) if config.get(key) != actual.get(key)]
    if wrong:
        raise TunerError(f"model_config disagrees with the blend artifact {ensemble.name!r} on {', '.join(wrong)}: "
                         "it describes the artifact and cannot change it; load without model_config, or re-export")


def raw_rows(ensemble: FittedEnsemble, model_input) -> pd.DataFrame | np.ndarray:
    """What the ensemble's preprocessor takes: the training columns, or arrays of the training shape."""
    example = ensemble.example
    if isinstance(example, pd.DataFrame):
        return model_input[list(example.columns)]
    values = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
    return values.reshape(len(values), *example.shape[1:]).astype(example.dtype)


mlflow.models.set_model(EnsembleModel())
