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

.PHONY: install demo test test-property bench gpu-check quality style clean

# Each step says what it does before it starts, and pip reports each package as it goes: a fresh install takes
# minutes (torch alone is hundreds of MB), which must never look like a hang.
$(BIN)/python:
	@echo "==> [install 1/4] Creating the virtual environment $(VENV) and upgrading pip"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is installed first and pinned, so that no dependency makes pip resolve another (multi-GB) torch.
$(VENV)/.installed: setup.py | $(BIN)/python
	@echo "==> [install 2/4] Installing torch==$(TORCH_VERSION), the largest download (a minute or more)"
	$(BIN)/python -m pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	@echo "==> [install 3/4] Installing transformers-heterogeneity (editable) with transformers and the test tools"
	$(BIN)/python -m pip install -e ".[testing]"
	@echo "==> [install 4/4] Installing TransformerEngine's Python code into $(VENV)/te-cpu (for the CPU TE tests)"
	# --no-deps: TE's own requirements are its CUDA core binaries (-cu12/-cu13, hundreds of MB); the tests run TE's
	# Python code over a CPU stand-in, and the Python packages it imports come with the `testing` extra. --target: out
	# of site-packages, where PEFT (imported by `transformers.Trainer`) would import it and fail without its core.
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/te-cpu "transformer-engine==$(TE_VERSION)"
	touch $@
	@echo "==> Installed into $(VENV): try \`make demo\` and \`make test\`."

install: $(VENV)/.installed

demo: install
	@echo "==> Running the demo (importing torch and Transformers takes a few seconds)"
	$(BIN)/transformers-heterogeneity demo

test: install
	$(BIN)/python -m pytest tests/heterogeneity

# The property tests at scale (`make test` runs a few configs per architecture): at least 1,000 random per-layer
# configs over every supported architecture, each checked against stock layers, its caches and a save/load round
# trip. Minutes; `.ci/run` runs it and reports its duration.
test-property: install
	HETEROGENEITY_PROPERTY_PROFILE=ci $(BIN)/python -m pytest tests/heterogeneity/test_property.py -q -rP \
		--hypothesis-show-statistics

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

quality: install
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)
	$(BIN)/python utils/check_upstream.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
