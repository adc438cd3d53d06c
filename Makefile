# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Each creates .venv when missing: torch 2.13.0 (CPU wheel) first, pinned again in every later pip call.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TORCH := torch==2.13.0

.PHONY: demo test lint venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev,onnx]" $(TORCH)
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

test: $(VENV)/.installed lint
	$(PY) -m pytest -q -ra --durations=15

clean:
	rm -rf runs .pytest_cache .ruff_cache
