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

.PHONY: install demo test test-property bench bench-gpu gpu-wheels gpu-install gpu-check llama-cpp-check quality style clean \
	upstream-patch upstream-check

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

# The GPU benchmark, one command for a machine with one NVIDIA GPU and CUDA PyTorch (benchmarks/gpu.sh; under 8
# minutes): `make gpu-wheels` where pip can download puts what it installs in .whl/ (ignored by git); carry .whl/ with
# the working tree and run `make bench-gpu` (or benchmarks/gpu.sh, with the machine's python3) there. Results:
# gpu.json and gpu.png in $OUT, else benchmarks/results/gpu/. `make bench-gpu BENCH_ARGS=--dry-run` runs it on tiny
# sizes on the CPU (under a minute).
gpu-wheels: install
	PYTHON=$(BIN)/python benchmarks/gpu_wheels.sh

bench-gpu:
	benchmarks/gpu.sh $(if $(wildcard $(BIN)/python),--python $(BIN)/python) $(BENCH_ARGS)

# On a machine with an NVIDIA GPU, one command: `make gpu-check`. It installs real TransformerEngine $(TE_VERSION) if it
# does not import (its core built for torch's CUDA major version; its PyTorch extension compiles against this torch,
# which needs the CUDA toolkit: several minutes), checks the machine (tests/heterogeneity/transformer_engine/
# gpu_environment.py: TE's three packages at one version, the core matching torch's CUDA), then runs the TE backend
# tests against real TE with TF32 off (the CPU stand-in is never loaded where CUDA exists), then the per-layer TE / stock
# benchmark (bf16 and FP8; prefill, decode, training step). Nothing of it has run on a GPU in this repository's CI.
GPU_ENV := $(BIN)/python -m tests.heterogeneity.transformer_engine.gpu_environment --te-version $(TE_VERSION)

gpu-install: install
	@$(BIN)/python -c "import transformer_engine.pytorch" 2>/dev/null || { \
		requirement=$$($(GPU_ENV) --requirement) || exit 1; \
		echo "gpu-install: pip install --no-build-isolation '$$requirement' (compiles TE's PyTorch extension: minutes)"; \
		$(BIN)/python -m pip install --no-build-isolation "$$requirement"; }

gpu-check: gpu-install
	NVIDIA_TF32_OVERRIDE=0 $(GPU_ENV)
	NVIDIA_TF32_OVERRIDE=0 $(BIN)/python -m pytest -q tests/heterogeneity/test_backends_transformer_engine.py \
		tests/heterogeneity/test_backends_transformer_engine_precision.py tests/heterogeneity/test_backends_selection.py \
		tests/heterogeneity/transformer_engine
	$(BIN)/python -m benchmarks.transformer_engine $(BENCH_ARGS)

# llama.cpp runs an exported Nemotron-NAS child (docs/source/en/heterogeneity_export.md): its own
# `convert_hf_to_gguf.py` converts the export, and its CPU library (through the pure-Python bindings of the same source
# distribution) computes logits that are compared with ours. Not part of `make test`: building llama.cpp takes ~5
# minutes on 2 cores, once (the check itself ~1 minute); the build is cached under $(LLAMA_CPP_CACHE) (git-ignored).
LLAMA_CPP_PYTHON_VERSION ?= 0.3.36
DISKCACHE_VERSION ?= 5.6.3
LLAMA_CPP_CACHE ?= .cache
LLAMA_CPP_SRC := $(LLAMA_CPP_CACHE)/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)
LLAMA_CPP_BUILD := $(LLAMA_CPP_SRC)/build

$(LLAMA_CPP_BUILD)/.built: | $(VENV)/.installed
	mkdir -p $(LLAMA_CPP_CACHE)
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --dest $(LLAMA_CPP_CACHE) "llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	tar -xzf $(LLAMA_CPP_CACHE)/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz -C $(LLAMA_CPP_CACHE)
	# Only the shared libraries the bindings load (llama, ggml); no tools, tests, server or network code.
	cmake -S $(LLAMA_CPP_SRC)/vendor/llama.cpp -B $(LLAMA_CPP_BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
		-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
		-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_OPENSSL=OFF
	cmake --build $(LLAMA_CPP_BUILD) --target llama -j2
	touch $@

llama-cpp-check: $(LLAMA_CPP_BUILD)/.built
	# The one Python dependency of the bindings that the test environment lacks.
	$(BIN)/python -m pip install --quiet "diskcache==$(DISKCACHE_VERSION)"
	LLAMA_CPP_SOURCE=$(abspath $(LLAMA_CPP_SRC)) LLAMA_CPP_LIB_PATH=$(abspath $(LLAMA_CPP_BUILD)/bin) \
		$(BIN)/python -m pytest tests/heterogeneity/llama_cpp -v -s

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
	$(BIN)/python utils/check_import_cycles.py

style: install
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

clean:
	rm -rf $(VENV) $(UPSTREAM_VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache demo_output
