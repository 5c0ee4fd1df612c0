"""The exported model's code: MLflow runs this file to load an export ("models from code").

`tuner export` passes this file as `python_model=`; MLflow copies it into the model folder and
executes it at load time, so the model object is not pickled; nor is any file of the blend (skops,
XGBoost JSON, `.keras`, JSON and arrays: tuner/ensemble/fitted.py). `load_context` checks the blend
folder (`context.artifacts["ensemble"]`) against its `checksums.json` and reads it back into a `FittedEnsemble`,
whose preprocessor turns raw rows into each member's features, and checks that the saved
`model_config` (blend kind, members, weights, input columns) describes that blend. Do not import
this module: it registers the model with `mlflow.models.set_model` when executed.

Inputs: tables are a DataFrame of the raw training columns (strings for categoricals and text,
missing values allowed anywhere). Images, series and token ids arrive flattened, one column per
value (a DataFrame, or an (N, values) array) and are reshaped to the training shape. The checks and
the prediction are `tuner.serve.predict`'s, which `tuner predict` runs without MLflow.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from tuner.serve.predict import ARTIFACT, check_config, load_blend, predict_rows


class EnsembleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.ensemble = load_blend(Path(context.artifacts[ARTIFACT]))
        check_config(context.model_config, self.ensemble)

    # MLflow reads this hint only to see that it carries no schema (without a hint it warns on every
    # load); the saved signature validates the input, and array models get the (N, values) ndarray
    # their tensor signature describes.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_rows(self.ensemble, model_input)


mlflow.models.set_model(EnsembleModel())
