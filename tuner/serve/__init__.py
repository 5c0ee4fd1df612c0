"""After the build: the exported MLflow pyfunc model, the code it loads from, and `tuner predict`."""
