# Every target sets up what it needs: a fresh clone only needs python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU PyTorch for the torch adapter's tests and the benchmark peers.  This exact release is the
# CPU wheel on these machines; elsewhere pip may fetch a large CUDA build, or fail: the
# torch tests then skip, nothing else depends on it.  `make test TORCH=` skips it.
TORCH  ?= torch==2.13.0

.PHONY: help venv install install-dev demo test test-min soak lint bench bench-quick mutation docs clean

help:
	@echo "make demo   - create $(VENV), install dask_reservoir, run the demo on an embedded LocalCluster"
	@echo "make test   - create $(VENV), install with the test extra, run lint and the whole test suite"
	@echo "make test-min - the suite on the oldest dask, distributed, pandas and numpy declared (in $(MIN_VENV))"
	@echo "make soak   - the model-based test of the public API with 500 random examples (about 15 minutes)"
	@echo "make bench  - run the benchmark suite (prints a table, writes bench-results.json)"
	@echo "make mutation - mutmut over the pure core, per-module scores (MUTATE='samplers ledger.cursor' for some)"
	@echo "make docs   - the API reference (pdoc, numpydoc docstrings) in build/docs; any warning fails it"

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
	-$(PIP) install --quiet "torchdata==0.11.0"
	touch $@

install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

# An environment without dask_reservoir, for the scheduler and workers of tests/test_code_upload.py
# (nothing to install on the workers): dask, distributed, pandas and numpy, every package pinned to
# the version $(VENV) has (a client and its cluster must run the same versions; direct references,
# which pip refuses as constraints, are left out).
WORKERS_VENV ?= .venv-workers
$(WORKERS_VENV)/.stamp: pyproject.toml $(VENV)/.stamp-dev
	rm -rf $(WORKERS_VENV)
	$(PYTHON) -m venv $(WORKERS_VENV)
	$(PIP) freeze --exclude-editable | grep -v -e '^dask_reservoir' -e ' @ ' > $(WORKERS_VENV)/constraints.txt
	$(WORKERS_VENV)/bin/python -m pip install --quiet -c $(WORKERS_VENV)/constraints.txt \
		"dask[dataframe,distributed]" pandas numpy
	touch $@

demo: install
	$(PY) -m dask_reservoir demo

# The API reference, from the docstrings of the public modules; a warning (a docstring pdoc cannot
# render, a name it cannot resolve) is an error, so that the reference cannot rot unnoticed.
docs: install-dev
	rm -rf build/docs
	$(PY) -W error -m pdoc --docformat numpy -o build/docs dask_reservoir dask_reservoir.torch dask_reservoir.errors
	@echo "API reference: build/docs/index.html"

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The suite runs twice: with the default thread runner, then with DASK_DASK_RESERVOIR__LOADER=auto, which
# puts every reservoir on a process, remote or embedded cluster (not a threaded one) behind a loader
# process, over the tests whose reservoirs that changes.  The first run records them as they run
# (tests/loader_pass.py: the library's choose_loader says a reservoir would get a loader process, or the
# test starts a Python child that builds reservoirs) into .pytest_cache/; the second (--loader-pass)
# runs those, and any test the record does not know (no record, or a record of other sources: all).
# The low end of the declared range (pyproject.toml's dependencies: tests/test_versions.py checks that
# these pins are its lower bounds), in an environment of its own: the suite once, with the thread
# runner, except what needs torch; the code-upload tests run their workers from a second environment
# of the same versions without the package.  CI runs it after `make test`.
MIN_VENV ?= .venv-min
MIN_PINS ?= "dask[dataframe,distributed]==2024.6.2" "distributed==2024.6.2" "pandas==2.2.3" "numpy==2.0.2"
$(MIN_VENV)/.stamp: pyproject.toml
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -e ".[test]" $(MIN_PINS)
	touch $@

# The workers without the package, at the same old versions (pinned to .venv-min's), for
# tests/test_code_upload.py.
MIN_WORKERS_VENV ?= .venv-min-workers
$(MIN_WORKERS_VENV)/.stamp: $(MIN_VENV)/.stamp
	rm -rf $(MIN_WORKERS_VENV)
	$(PYTHON) -m venv $(MIN_WORKERS_VENV)
	$(MIN_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -e '^dask_reservoir' -e ' @ ' > $(MIN_WORKERS_VENV)/constraints.txt
	$(MIN_WORKERS_VENV)/bin/python -m pip install --quiet -c $(MIN_WORKERS_VENV)/constraints.txt $(MIN_PINS)
	touch $@

test-min: $(MIN_VENV)/.stamp $(MIN_WORKERS_VENV)/.stamp
	DASK_RESERVOIR_REQUIRE_WORKERS_ENV=1 DASK_RESERVOIR_WORKERS_PYTHON=$(abspath $(MIN_WORKERS_VENV))/bin/python \
		$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider
	@$(MIN_VENV)/bin/python -c "import dask, distributed, pandas, numpy; print('test-min ran on dask', dask.__version__, 'distributed', distributed.__version__, 'pandas', pandas.__version__, 'numpy', numpy.__version__)"

test: install-dev lint $(WORKERS_VENV)/.stamp
	DASK_RESERVOIR_REQUIRE_WORKERS_ENV=1 $(PY) -m pytest
	DASK_RESERVOIR_REQUIRE_WORKERS_ENV=1 DASK_DASK_RESERVOIR__LOADER=auto $(PY) -m pytest --loader-pass

# The model-based test (tests/test_model.py) runs a small fixed budget in `make test`; here, many
# random examples.  SOAK_EXAMPLES / SOAK_STEPS size it; a failure prints the example to replay.
SOAK_EXAMPLES ?= 500
SOAK_STEPS    ?= 25
soak: install-dev
	DASK_RESERVOIR_MODEL_RANDOM=1 DASK_RESERVOIR_MODEL_EXAMPLES=$(SOAK_EXAMPLES) \
		DASK_RESERVOIR_MODEL_STEPS=$(SOAK_STEPS) $(PY) -m pytest -p no:cacheprovider tests/test_model.py tests/test_soak.py

bench: install-dev $(VENV)/.stamp-bench
	$(PY) -m benchmarks.run

bench-quick: install-dev
	$(PY) -m benchmarks.run --quick --only W2,W3,W4,W5,W6

# Mutation testing (mutmut 3, configured in [tool.mutmut] of pyproject.toml) of the pure core, the
# dask_reservoir/_core folder, against tests/core and the core's doctests (no cluster); not part of
# `make test` (minutes, not seconds).
# MUTATE='samplers ledger.cursor' limits the run to those modules of _core; MUTMUT_CHILDREN sets the parallelism.
# Results are kept in mutants/ and only changed functions are re-tested: `rm -rf mutants` to start over.
MUTATE          ?=
MUTMUT_CHILDREN ?= $(shell nproc 2>/dev/null || echo 2)
mutation: install-dev
	$(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN) $(foreach m,$(MUTATE),'dask_reservoir._core.$(m).*')
	$(PY) tools/mutation_report.py

clean:
	rm -rf $(VENV) $(WORKERS_VENV) $(MIN_VENV) $(MIN_WORKERS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
