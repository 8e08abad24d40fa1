# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite).
# Both set up .venv first. torch is pinned to 2.13.0 here: that is the CPU build on this project's
# machines, and the CUDA build from PyPI on a GPU machine (torch-harmonics 0.8.0 needs torch < 2.14).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/earthsim demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) benchmarks/loader.py --quick

clean:
	rm -rf data runs .pytest_cache
