# Every target sets itself up: a fresh clone needs nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# TransformerEngine's pure-Python wheel, for the TE tests (tests/heterogeneity/transformer_engine/README.md).
TE_VERSION ?= 2.20.2
# Where torch comes from: empty for pip's configured indexes (on plain PyPI, the Linux wheel of torch is the CUDA
# build); `make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` for the CPU build.
TORCH_INDEX_URL ?=
CHECK_DIRS := src tests utils benchmarks setup.py

.PHONY: install demo test bench bench-gpu gpu-wheels gpu-check quality style clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is installed first and pinned, so that no dependency makes pip resolve another (multi-GB) torch.
$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e ".[testing]"
	# --no-deps: TE's own requirements are its CUDA core binaries (-cu12/-cu13, hundreds of MB); the tests run TE's
	# Python code over a CPU stand-in, and the Python packages it imports come with the `testing` extra. --target: out
	# of site-packages, where PEFT (imported by `transformers.Trainer`) would import it and fail without its core.
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/te-cpu "transformer-engine==$(TE_VERSION)"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/transformers-heterogeneity demo

test: install
	$(BIN)/python -m pytest tests/heterogeneity

# Benchmarks (not part of `make test`): table on stdout, benchmarks/results/results.json and PNG plots.
# `make bench BENCH_ARGS=--quick` is a smoke test on tiny models.
MATPLOTLIB_VERSION ?= 3.10.8
BENCH_ARGS ?=

bench: install
	$(BIN)/python -m pip install --quiet "matplotlib==$(MATPLOTLIB_VERSION)"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The GPU benchmark, one command for a machine with one NVIDIA GPU and CUDA PyTorch (benchmarks/gpu.sh; under 8
# minutes): `make gpu-wheels` where pip can download puts what it installs in .whl/ (ignored by git); carry .whl/ with
# the working tree and run `make bench-gpu` (or benchmarks/gpu.sh, with the machine's python3) there. Results:
# gpu.json and gpu.png in $OUT, else benchmarks/results/gpu/. `make bench-gpu BENCH_ARGS=--dry-run` runs it on tiny
# sizes on the CPU (under a minute).
gpu-wheels: install
	PYTHON=$(BIN)/python benchmarks/gpu_wheels.sh

bench-gpu:
	benchmarks/gpu.sh $(if $(wildcard $(BIN)/python),--python $(BIN)/python) $(BENCH_ARGS)

# On a CUDA machine with TransformerEngine installed (`pip install --no-build-isolation
# "transformer-engine[pytorch]==$(TE_VERSION)"` into $(VENV)): the TE backend tests against real TE (the CPU stand-in
# is never loaded where CUDA exists), then the per-layer TE / stock benchmark (bf16 and FP8; prefill, decode, training).
gpu-check: install
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA GPU and a CUDA build of torch')"
	$(BIN)/python -c "import transformer_engine.pytorch" || (echo 'gpu-check needs real TransformerEngine: $(BIN)/pip install --no-build-isolation "transformer-engine[pytorch]==$(TE_VERSION)"' && exit 1)
	$(BIN)/python -m pytest tests/heterogeneity/test_backends_transformer_engine.py tests/heterogeneity/test_backends_selection.py tests/heterogeneity/transformer_engine -q
	$(BIN)/python -m benchmarks.transformer_engine $(BENCH_ARGS)

quality: install
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)
	$(BIN)/python utils/check_upstream.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
