"""What a person reads: plots, the study's HTML page and its ensemble sections, the MLflow dashboard."""
