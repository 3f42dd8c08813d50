# Every target sets up what it needs: a fresh clone only needs python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU PyTorch for the torch adapter's tests and the benchmark peers.  This exact release is the
# CPU wheel on these machines; elsewhere pip may fetch a large CUDA build, or fail: the
# torch tests then skip, nothing else depends on it.  `make test TORCH=` skips it.
TORCH  ?= torch==2.13.0

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
	-[ -z "$(TORCH)" ] || $(PIP) install --quiet "$(TORCH)"
	touch $@ $(VENV)/.stamp-base

$(VENV)/.stamp-bench: pyproject.toml $(VENV)/.stamp-dev
	-$(PIP) install --quiet "monai>=1.3"
	touch $@

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

bench: install-dev $(VENV)/.stamp-bench
	$(PY) -m benchmarks.run

bench-quick: install-dev
	$(PY) -m benchmarks.run --quick --only W2,W3,W4,W5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
