# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.transferlab-installed

.PHONY: setup demo demo-text test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/transferlab demo

demo-text: setup
	$(BIN)/transferlab demo --text

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n auto --dist worksteal  # one process per core, one thread each (tests/conftest.py); idle workers steal queued tests

bench: setup
	$(BIN)/python benchmarks/feature_cache.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/train_throughput.py
