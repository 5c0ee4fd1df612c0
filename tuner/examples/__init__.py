"""Worked examples: builders for the custom family (see studies/examples/) and a new family in one
module (knn_family.py, see docs/architecture.md)."""
