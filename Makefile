# The README's two commands are `make demo` and `make test`; CI runs `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint typecheck pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install the embedded default and run the quickstart: Schooner on local processes,
# an sklearn model deployed and serving real predictions over HTTP.
demo: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,sklearn]'
	$(BIN)/python examples/quickstart.py

# Install what the tests need, then lint, type-check and run every test.
test: $(BIN)/python .venv-kserve/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	$(MAKE) lint typecheck pytest

# KServe's Python client, for the Open Inference Protocol tests, in a venv of its own
# (kserve pins older psutil and kubernetes than Schooner); made only when missing, at the
# version the tests were written against.
.venv-kserve/bin/python:
	$(PYTHON) -m venv .venv-kserve
	.venv-kserve/bin/python -m pip install --quiet --upgrade pip
	.venv-kserve/bin/python -m pip install --quiet "kserve==0.21.0"

# Throughput and tail latency of Schooner against its peers on this machine (needs wrk).
bench: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --duration 5 --rounds 3

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .venv-kserve build *.egg-info .mypy_cache .ruff_cache .pytest_cache
