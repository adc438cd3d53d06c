# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Each creates .venv when missing: torch 2.13.0 (CPU wheel) first, pinned again in every later pip call.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TORCH := torch==2.13.0
EVENV ?= .venv-extras
EPY := $(EVENV)/bin/python

.PHONY: demo test lint venv clean monailabel-test bundle extras-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev,onnx]" $(TORCH)
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

# bundle/ is the default export: regenerate it after editing configs/bundle, configs/tasks or the shipped model
bundle: $(VENV)/.installed
	$(PY) -m isic_monai.cli export-bundle bundle --no-torchscript

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# one pytest-xdist worker per core (one torch thread each); a test module stays on one worker unless its fixtures are
# cheap (tests/conftest.py: SPLIT_MODULES, HEAVY_FIRST), so its tiny trained models are built once
# PYTHONDONTWRITEBYTECODE emptied: the package is compiled once, not in each of the suite's MONAI commands
TEST_WORKERS ?= 2
test: $(VENV)/.installed $(EVENV)/.installed lint
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadscope

# The tracking and scorer extras in an overlay venv: it sees every package of .venv (a .pth file adds .venv's
# site-packages) and adds MLflow and the official ISIC scorer (with pandas and scikit-learn), which MONAI imports in
# every process when they are installed: the tracking and scoring tests use it (tests/conftest.py: extras_python), and
# no other command pays those imports (docs/architecture.md#the-extras-venv)
$(EVENV)/.installed: $(VENV)/.installed
	test -x $(EPY) || $(PYTHON) -m venv $(EVENV)
	$(EPY) -c "import site, sys; from pathlib import Path; \
	  base = Path(sys.argv[1]).resolve(); own = Path(site.getsitepackages()[0]); \
	  (own / 'isic_monai_base.pth').write_text(f'import site; site.addsitedir({str(base)!r})\n')" \
	  "$$($(PY) -c 'import site; print(site.getsitepackages()[0])')"
	$(EPY) -m pip install -q --disable-pip-version-check -e ".[tracking,scorer]" $(TORCH)
	touch $@

extras-venv: $(EVENV)/.installed

# MONAI Label 0.8.5 needs numpy<2: its own virtual environment (pins from ../shared/reference/facts.md). It imports
# torchvision, which fails beside the CPU torch 2.13, so that venv ends on the torch 2.14.1 / torchvision 0.29.1 pair.
MLVENV ?= .venv-monailabel
MLPY := $(MLVENV)/bin/python
MLPIP := $(MLPY) -m pip install -q --disable-pip-version-check

$(MLVENV)/.installed: pyproject.toml
	test -x $(MLPY) || $(PYTHON) -m venv $(MLVENV)
	$(MLPIP) $(TORCH)
	$(MLPIP) monailabel==0.8.5 $(TORCH)
	$(MLPIP) "pydicom<3" "dicomweb-client[gcp]<0.60" "pynetdicom<2.1" $(TORCH)
	$(MLPIP) -e ".[imagenet]" $(TORCH)  # MONAI Label training runs the bundle's train config: ImageNet start
	$(MLPIP) torch==2.14.1 torchvision==0.29.1
	touch $@

# export the default bundle, serve it with `monailabel start_server` on 127.0.0.1, infer and train through HTTP
monailabel-test: $(VENV)/.installed $(MLVENV)/.installed
	$(PY) -m pytest -q -ra tests/test_monailabel.py --monailabel-venv $(MLVENV)

clean:
	rm -rf runs .pytest_cache .ruff_cache
