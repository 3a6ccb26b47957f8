# The two set-up commands: `make demo` and `make test`. Both start from a fresh clone with only
# Python 3.11+ installed: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "encmigrate needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/encmigrate demo

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests bench
	$(BIN)/ruff format --check toolkit tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Heavy cases (long fault-injection runs, large tables): not part of `make test`.
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

bench: $(STAMP)
	$(BIN)/python bench/bench_crypto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis encmigrate-demo.db encmigrate-demo
