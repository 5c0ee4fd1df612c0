"""The keys of the attributes tuner writes on each Optuna trial, spelled once for writers and readers.

A trial's attributes are its stored record beside its params and value: the search writes them,
and the catalog, finalize, ensembles and reports read them back, in this process or a later one.
"""

# what the trial fitted
FAMILY_ATTR = "family"  # the model family's registered name
PARAMS_ATTR = "params"  # the family's plain params, what `Family.build` takes
BEST_STEP_ATTR = "best_step"  # median over folds of the epochs / rounds early stopping kept: refits train that long
FOLD_STEPS_ATTR = "fold_steps"  # each fold's kept step count (a bagged trial's fold models)
FOLD_SCORES_ATTR = "fold_scores"  # each fold's score, under cross-validation
FOLDS_AT_ONCE_ATTR = "folds_at_once"  # how many of its folds were fitted side by side (tuner.search.fold_fits)
DURATION_ATTR = "duration_s"  # wall seconds of the trial's fits, what the time budget plans with

# how it ran or why it did not
WORKER_ATTR = "worker"  # the process that ran it
SKIPPED_ATTR = "skipped"  # why the trial was refused before fitting (budget spent, family capped)
ERROR_ATTR = "error"  # the exception that failed it
CUT_ATTR = "cut"  # why it was pruned before its last fold: too little time left
INTERRUPTED_ATTR = "interrupted"  # the signal that stopped it; its params were queued again
REQUEUED_FROM_ATTR = "requeued_from"  # on the queued copy: the interrupted trial's number
PORTFOLIO_ATTR = "portfolio"  # on a portfolio configuration queued before the search: its source ("default", ...)

# its stored artifacts (tuner.study.trial_bags)
OOF_ATTR = "oof_artifact"  # out-of-fold predictions
BAG_ATTR = "bag_artifact"  # fold models
VIEW_ATTR = "bag_view"  # the view of the features its fold models read
