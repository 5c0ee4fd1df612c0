"""Loading, validating, sealing and preprocessing the rows a study searches over."""

from tuner.data.preprocess import FeaturePreprocessor, Part, prepare_parts
from tuner.data.sources import BUILTINS, Dataset, load_dataset
from tuner.data.split import HOLDOUT, TEST, TRAIN, VALID, SealedSplit, make_split
from tuner.data.validation import check_task, infer_task

__all__ = [
    "BUILTINS", "Dataset", "FeaturePreprocessor", "HOLDOUT", "Part", "SealedSplit", "TEST", "TRAIN", "VALID",
    "check_task", "infer_task", "load_dataset", "make_split", "prepare_parts",
]
