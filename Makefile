# The two commands for a fresh clone: `make demo` and `make test`.
# Both create .venv (a fresh virtual environment) on first use and install lrsup into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast compat lint wheel-check install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tensorflow,jax,plots,tensorboard,test,lint,ray]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/lrsup run examples/digits/train.py -- --epochs 15

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not keras"

# compat: the whole compatibility matrix of issue 13 (tests/compat) for one backend:
# make compat BACKEND=jax (make install installs jax; PyTorch: .venv/bin/pip install torch==2.13.0, see docs/compat.md).
BACKEND ?= tensorflow
compat: $(VENV)/.installed
	$(PY) -m tests.compat --backend $(BACKEND)

# lint: ruff (lint and format), then the import contracts and mypy (pyproject.toml) over a plain install
# of the packages in .lint/ (the editable install's import hook is invisible to static tools).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf .lint && $(PY) -m pip install -q --no-deps --no-build-isolation --target .lint . 2>/dev/null
	cd .lint && PYTHONPATH=. ../$(VENV)/bin/lint-imports ../pyproject.toml
	cd .lint && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --cache-dir ../.mypy_cache -p lrsup

# wheel-check: the wheel built from this checkout, installed into a fresh virtual environment
# (not the editable install), supervises the digits example for 2 epochs from outside the repo.
wheel-check: $(VENV)/.installed
	rm -rf build/wheel-check && mkdir -p build/wheel-check/run
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install -q "$$(ls build/wheel-check/lrsup-*.whl)[tensorflow]"
	cd build/wheel-check/run && ../venv/bin/lrsup run $(CURDIR)/examples/digits/train.py -- --epochs 2
	test -f build/wheel-check/run/runs/*/report.md

clean:
	rm -rf $(VENV) build .lint *.egg-info runs .pytest_cache .hypothesis
