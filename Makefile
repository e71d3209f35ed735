# Every target sets itself up: a fresh clone needs nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where torch comes from: empty for pip's configured indexes (on plain PyPI, the Linux wheel of torch is the CUDA
# build); `make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` for the CPU build.
TORCH_INDEX_URL ?=
CHECK_DIRS := src tests utils benchmarks setup.py

.PHONY: install demo test bench quality style clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is installed first and pinned, so that no dependency makes pip resolve another (multi-GB) torch.
$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e ".[testing]"
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

quality: install
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)
	$(BIN)/python utils/check_upstream.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
