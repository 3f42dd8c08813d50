# Every target sets up what it needs: a fresh clone only needs python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: help venv install install-dev demo test lint bench bench-quick clean

help:
	@echo "make demo   - create $(VENV), install dask_reservoir, run the demo on an embedded LocalCluster"
	@echo "make test   - create $(VENV), install with the test extra, run lint and the whole test suite"
	@echo "make bench  - run the benchmark suite (prints a table, writes bench-results.json)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# stamps re-install when pyproject.toml changes
$(VENV)/.stamp-base: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(VENV)/.stamp-base

install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

demo: install
	$(PY) -m dask_reservoir demo

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: install-dev lint
	$(PY) -m pytest

bench: install-dev
	$(PY) -m benchmarks.run

bench-quick: install-dev
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
