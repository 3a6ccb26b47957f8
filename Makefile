# The two set-up commands: `make demo` and `make test`. Both start from a fresh clone with only
# Python 3.11+ installed: they create .venv and install what they need. `make demo` installs
# encmigrate and its runtime dependencies only; the test extras (pytest, ruff, mypy, boto3,
# moto, ...) are installed by the first target that runs tests or linters.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per install, so `make demo` then `make test` adds the extras to the same .venv.
STAMP_PACKAGE := $(VENV)/.installed-package
STAMP_TEST    := $(VENV)/.installed-test

.PHONY: demo test test-slow lint bench clean

# The venv gets uv (from PyPI, into the venv only) to install everything else: it resolves and
# installs the test extras in seconds where pip took about 50 s of the 10-minute CI budget.
INSTALL := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv pip install --quiet

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "encmigrate needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv

$(STAMP_PACKAGE): pyproject.toml | $(BIN)/python
	$(INSTALL) -e .
	@touch $@

# Installing the extras installs the package too: the package stamp is refreshed with it.
$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(INSTALL) -e '.[test]'
	@touch $@ $(STAMP_PACKAGE)

demo: $(STAMP_PACKAGE)
	$(BIN)/encmigrate demo

lint: $(STAMP_TEST)
	$(BIN)/ruff check toolkit tests bench
	$(BIN)/ruff format --check toolkit tests bench
	$(BIN)/mypy

# The suite runs in TEST_JOBS processes (pytest-xdist), one test file per process at a time
# (module fixtures stay in one process); most tests wait on a database, so 2 processes
# halve the wall time on 2 cores. TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2

test: lint
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile

# Heavy cases (long fault-injection runs, large tables, the wheel in a clean venv): not part of
# `make test`.
test-slow: $(STAMP_TEST)
	$(BIN)/pytest -m slow

bench: $(STAMP_TEST)
	$(BIN)/python bench/bench_crypto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis encmigrate-demo.db encmigrate-demo
