"""The search: the trial loop and its budget guard, the objective, the first trials, samplers and pruners, workers."""
