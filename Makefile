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

.PHONY: install demo test bench gpu-check quality style clean

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

# On a CUDA machine with TransformerEngine installed (`pip install --no-build-isolation
# "transformer-engine[pytorch]==$(TE_VERSION)"` into $(VENV)): the TE backend tests against real TE (the CPU stand-in
# is never loaded where CUDA exists), then the per-layer TE / stock benchmark (bf16 and FP8; prefill, decode, training).
gpu-check: install
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA GPU and a CUDA build of torch')"
	$(BIN)/python -c "import transformer_engine.pytorch" || (echo 'gpu-check needs real TransformerEngine: $(BIN)/pip install --no-build-isolation "transformer-engine[pytorch]==$(TE_VERSION)"' && exit 1)
	$(BIN)/python -m pytest tests/heterogeneity/test_backends_transformer_engine.py tests/heterogeneity/test_backends_selection.py tests/heterogeneity/transformer_engine -q
	$(BIN)/python -m benchmarks.transformer_engine $(BENCH_ARGS)

# The checkpoint families' tests in upstream's tester style (tests/heterogeneity/upstream_models/), run inside
# upstream's test suite (utils/run_upstream_model_tests.py): tests/*.py of the transformers sdist plus the files it
# leaves out, from a huggingface/transformers checkout (the v5.23.0 tag). Not part of `make test`; a few minutes per
# family on 2 cores. `make upstream-model-tests UPSTREAM_CHECKOUT=path UPSTREAM_TEST_ARGS="--models deci"`.
UPSTREAM_CHECKOUT ?=
UPSTREAM_TEST_ARGS ?=
# What upstream's test modules import beyond the `testing` extra (transformers 5.23's own `testing` extra has them).
UPSTREAM_TEST_DEPS ?= parameterized==0.9.0 httpx==0.29.0

.PHONY: upstream-model-tests
upstream-model-tests: install
	@test -n "$(UPSTREAM_CHECKOUT)" || (echo "upstream-model-tests needs UPSTREAM_CHECKOUT=path/to/a/checkout/of/huggingface/transformers (tag v5.23.0)" && exit 1)
	$(BIN)/python -m pip install --quiet $(UPSTREAM_TEST_DEPS)
	$(BIN)/python utils/run_upstream_model_tests.py --upstream-checkout "$(UPSTREAM_CHECKOUT)" $(UPSTREAM_TEST_ARGS)

quality: install
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)
	$(BIN)/python utils/check_upstream.py
	$(BIN)/python utils/check_import_cycles.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
