# Two commands for a fresh machine (each sets up .venv once, then reuses it):
#   make demo   short real training run on the copy task: orthogonal modReLU RNN (expRNN
#               recipe) vs tanh RNN vs GRU, loss curves beside gradient-flow heatmaps
#   make test   the test suite
#
# torch is installed first and on its own: a plain `torch` requirement with no torch present
# pulls a multi-GB CUDA build. TORCH_SPEC picks the wheel. The default is the CPU build of the
# release the project is tested with, `torch==2.13.0+cpu`. pip looks for it first where pip is
# set up to look (a local copy in pip's find-links, as on this project's CI machines, or a
# mirror), and only when it is not there on PyTorch's wheel page, TORCH_WHEELS (its
# dependencies from PyPI): a machine that cannot reach that page never waits on it, and a
# connected one gets the same wheel from it as before.
# With a GPU:  make setup TORCH_SPEC=torch    (PyPI's CUDA build, any release >= 2.2)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_WHEELS ?= https://download.pytorch.org/whl/torch/
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seqnorm-installed

.PHONY: setup demo test test-fast lint bench bench-tuned bench-threads clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC) 2>/dev/null || { \
	  echo "$(TORCH_SPEC) is not in pip's local or default index: trying $(TORCH_WHEELS)"; \
	  $(PY) -m pip install --quiet $(TORCH_SPEC) --find-links $(TORCH_WHEELS); }
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

# Two shapes, one thread: the sequential-MNIST shape and a wide short one. The headline (README)
# is the loss the benchmarks train on, the last step's output (`--loss last`): torch as users run
# it, torch with subnormals flushed, seqnorm's native kernels, the GEMM floor. Then the same
# shapes with a loss over every step (`--loss mean`), with memory and the torch-kernel rows.
BENCH_LAST_ROWS ?= torch;torch, flushed;spectral;GEMM floor
BENCH_ROWS ?= torch;spectral;spectral, torch kernel;GEMM floor;GEMM floor, torch.mm
# The LRU (configs/psmnist_lru.yaml's model, and one LRU layer) beside the GRU at the psMNIST shape.
BENCH_LRU_ROWS ?= torch;torch, flushed;spectral;LRU (psmnist_lru.yaml);LRU (psmnist_lru.yaml), torch scan;LRU layer
BENCH = OMP_NUM_THREADS=1 $(PY) experiments/bench_speed.py --rounds 3 --min-run-time 1
TUNED = MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1
bench: $(STAMP)
	$(BENCH) --loss last --variants "$(BENCH_LAST_ROWS)" --passes train --no-memory \
	  --seq-lens 784 --batch 128 --hidden 128 --out experiments/results/speed_last.md
	$(BENCH) --loss last --variants "$(BENCH_LAST_ROWS)" --passes train --no-memory \
	  --seq-lens 100 --batch 64 --hidden 512 --out experiments/results/speed_last_h512.md
	$(BENCH) --loss mean --variants "$(BENCH_ROWS)" --passes train,fwd \
	  --seq-lens 784 --batch 128 --hidden 128 --out experiments/results/speed.md
	$(BENCH) --loss mean --variants "$(BENCH_ROWS)" --passes train,fwd \
	  --seq-lens 100 --batch 64 --hidden 512 --out experiments/results/speed_h512.md
	$(BENCH) --loss last --layers gru --variants "$(BENCH_LRU_ROWS)" --passes train,fwd \
	  --no-memory --seq-lens 784 --batch 128 --hidden 128 --out experiments/results/speed_lru.md
	$(PY) experiments/speed_table.py

# The mean-loss runs again with glibc told to keep freed memory (no fresh page faults).
bench-tuned: $(STAMP)
	$(TUNED) $(BENCH) --loss mean --variants "$(BENCH_ROWS)" --passes train,fwd \
	  --seq-lens 784 --batch 128 --hidden 128 --out experiments/results/speed_tuned.md
	$(TUNED) $(BENCH) --loss mean --variants "$(BENCH_ROWS)" --passes train,fwd \
	  --seq-lens 100 --batch 64 --hidden 512 --out experiments/results/speed_h512_tuned.md

# One thread against two, both sides (the sequential-MNIST shape, time only).
bench-threads: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) experiments/bench_speed.py --variants "torch;spectral" --threads 2 \
	  --seq-lens 784 --batch 128 --hidden 128 --rounds 3 --min-run-time 1 --passes train,fwd \
	  --no-memory --out experiments/results/speed_2threads.md

clean:
	rm -rf $(VENV) runs .pytest_cache
