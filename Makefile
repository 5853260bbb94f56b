# Set-up and everyday commands. Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
DEMO   ?= demo-out

.PHONY: demo test test-fast venv clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# The whole pipeline on the built-in phantom data: pack, train, generate, preview, measure.
demo: venv
	$(PY) demo.py --outdir $(DEMO)

# The test suite (what CI runs).
test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 tests

# The fast lane while working: everything but builds, fault injection and training runs (about 2 minutes).
test-fast: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not slow" tests

clean-demo:
	rm -rf $(DEMO)
