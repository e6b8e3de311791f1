# Two commands for a fresh machine (each sets up .venv once, then reuses it):
#   make demo   short real training run (copy task, spectral GRU vs unconstrained GRU)
#               with its gradient-flow heatmaps; see README.md for where things land
#   make test   the test suite
#
# torch is installed first and on its own: a plain `torch` requirement with no torch present
# pulls a multi-GB CUDA build. TORCH_SPEC picks the wheel. The default is the CPU build of the
# release the project is tested with, `torch==2.13.0+cpu`, from PyTorch's wheel page (its
# dependencies from PyPI); a local copy of that wheel in pip's find-links, as on this
# project's CI machines, is used offline.
# With a GPU:  make setup TORCH_SPEC=torch    (PyPI's CUDA build, any release >= 2.2)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0+cpu --find-links https://download.pytorch.org/whl/torch/
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seqnorm-installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check seqnorm tests experiments
	$(VENV)/bin/ruff format --check seqnorm tests experiments

bench: $(STAMP)
	$(PY) experiments/bench_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
