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

.PHONY: install demo test bench gpu-check quality style clean upstream-patch upstream-check

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

# The feature as a patch series on the pristine transformers 5.23.0 sdist (utils/upstream/README.md): the sdist is
# downloaded once into build/upstream/, the series rebuilt from this repository, and dist/upstream/*.patch written.
upstream-patch: install
	$(BIN)/python utils/upstream/series.py build

# The series applied with `git am` to a fresh pristine tree, installed (not editable) in a fresh $(UPSTREAM_VENV) with
# torch and the test dependencies but without this repository's overlay, then this repository's tests run against it
# (overlay-only tests skipped). build/upstream/junit-patched.xml holds the results.
UPSTREAM_VENV ?= .venv-upstream
UPSTREAM_BIN := $(UPSTREAM_VENV)/bin

upstream-check: upstream-patch
	$(BIN)/python utils/upstream/series.py apply
	rm -rf $(UPSTREAM_VENV)
	$(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_BIN)/python -m pip install --quiet --upgrade pip
	$(UPSTREAM_BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(UPSTREAM_BIN)/python -m pip install --quiet ./build/upstream/check-tree
	$(BIN)/python utils/upstream/environment.py requirements > build/upstream/requirements.txt
	$(UPSTREAM_BIN)/python -m pip install --quiet -r build/upstream/requirements.txt
	$(UPSTREAM_BIN)/python -m pip install --quiet --no-deps --target $(UPSTREAM_VENV)/te-cpu "transformer-engine==$(TE_VERSION)"
	$(UPSTREAM_BIN)/python utils/upstream/environment.py check-install
	$(UPSTREAM_BIN)/python -m pytest tests/heterogeneity -m "not overlay_only" -p no:cacheprovider \
		--junitxml=build/upstream/junit-patched.xml

quality: install
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)
	$(BIN)/python utils/check_upstream.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) $(UPSTREAM_VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
