"""Builders for the custom family, shipped as worked examples (see studies/examples/)."""
