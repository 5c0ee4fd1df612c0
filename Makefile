# Each target does its own set-up: a virtual environment in .venv with tuner and its test extra.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: quickstart test test-fast bench-quick install clean-stores

$(BIN)/tuner: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q tuner  # an editable install writes no bytecode; without it each start compiles tuner
	touch $@

install: $(BIN)/tuner

## The main job on a built-in dataset inside one minute: a bagged search with a sealed test split,
## the test split scored once, blends chosen out of fold and judged on test, the chosen blend
## exported to ensembles/breast-cancer/. Run again, it shows the stored results without a new test look.
quickstart: $(BIN)/tuner
	$(BIN)/tuner run-all studies/breast-cancer.yaml --budget 60

## The whole test suite, slow end-to-end tests included (what CI runs), on up to 4 cores.
PYTEST := $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

test: $(BIN)/tuner
	bash .ci/services
	$(PYTEST)

## The quick tests only (no end-to-end training runs).
test-fast: $(BIN)/tuner
	$(PYTEST) -m "not slow"

## The quick benchmarks (about 10 minutes on 2 cores): quality at a 60 s budget on three generated
## tables beside the defaults (and FLAML with the bench extra), per-trial overhead, pruning and RAM.
## Full versions: see the README's Benchmarks section.
bench-quick: $(BIN)/tuner
	$(BIN)/python benchmarks/quality.py --budgets 60 --tables churn,land_use,house_prices
	$(BIN)/python benchmarks/overhead.py --quick

clean-stores:
	rm -rf studies/*.db studies/*.db-wal studies/*.db-shm mlruns/mlflow.db mlruns/mlflow.db-wal mlruns/mlflow.db-shm mlruns/artifacts
