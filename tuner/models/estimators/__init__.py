"""The scikit-learn-style families (fit / predict on a table) and the member that wraps them."""
