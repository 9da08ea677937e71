# digitlab — the README's commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint format bench system-deps clean help

help:
	@echo "make run    - set up .venv, fetch MNIST, train the notebook's network, evaluate it"
	@echo "make test   - set up what the tests need and run the whole suite"
	@echo "make lint   - ruff check and format check"
	@echo "make bench  - speed and accuracy benchmarks (benchmarks/RESULTS.md)"

# The virtualenv, from the pinned lock; rebuilt when the lock or pyproject changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/digitlab data fetch
	$(BIN)/digitlab train --preset seed --validation-split 0.1
	$(BIN)/digitlab evaluate latest

# Debian packages the tests use (a browser for the drawing page, Fashion-MNIST).
system-deps:
	@bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
