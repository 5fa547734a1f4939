# The two commands of a fresh machine: `make demo` and `make test`.
# Both create .venv (or reuse it) and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Text files (SQL, HTML, reports) are UTF-8 whatever the machine's locale is.
export PYTHONUTF8 := 1
STAMP := $(VENV)/.drlake-installed

.PHONY: demo test test-all lint bench clean-lake

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the project's requirements change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/drlake demo

# The default suite on TEST_WORKERS processes (pytest-xdist), one test file per worker at a time
# (module fixtures are built once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/quantifiers.py

clean-lake:
	rm -rf lake/volumes lake/tables lake/activations lake/reports demo-cohort
