"""What the commands run end to end: a study run with its dashboard, and `run-all`'s stages and their clock."""
