"""User-facing errors: one line that names the problem and the fix, and a non-zero exit."""


class TunerError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with status 2."""


class StudyFileError(TunerError):
    """The study file is unreadable or breaks the schema."""


class DataError(TunerError):
    """The data cannot be searched as given (missing target, NaNs, one class, bad shapes...)."""


class SplitMismatchError(TunerError):
    """The data or the study file no longer matches what the study sealed."""


class StorageError(TunerError):
    """The Optuna storage or the MLflow store cannot be reached or used."""
