"""The sealed test rows, looked at once: finalize (refit and score the finalists) and the reusable holdout."""
