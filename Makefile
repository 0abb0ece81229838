# The two commands for a fresh clone: `make demo` and `make test`.
# Both create .venv (a fresh virtual environment) on first use and install lrsup into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tensorflow,plots,tensorboard,test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/lrsup run examples/digits/train.py -- --epochs 15

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not keras"

clean:
	rm -rf $(VENV) build *.egg-info runs .pytest_cache .hypothesis
