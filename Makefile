# Every target creates .venv when missing and installs the package into it first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint docs bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,dask,dustmaps,gaia,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dustgp demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# The documentation site (Sphinx, docs/); warnings are errors, so a broken reference or docstring fails the build;
# -E rereads every page, so a warning is never hidden by an earlier incremental build.
docs: $(STAMP)
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_kernel.py
	$(BIN)/python benchmarks/bench_scaling.py

clean:
	rm -rf $(VENV) demo-output docs/_build docs/api/generated docs/generated
