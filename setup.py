"""Packaging for transformers-heterogeneity, an overlay that installs `transformers.heterogeneity`.

The package lives inside the `transformers` namespace beside the pinned upstream release from PyPI: only
`transformers.heterogeneity` and its subpackages are listed, never `transformers` itself, so installing it adds files
to upstream's directory without replacing any. A one-line `.pth` file makes stock Transformers honour
`per_layer_config` without a user import (see `transformers_heterogeneity_hook.py`).
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


PTH_FILE = "transformers_heterogeneity.pth"


class BuildPyWithPth(build_py):
    """Copies the activation `.pth` file to the root of the build so that it lands in `site-packages`.

    Wheels install files at the root of their purelib directory into `site-packages`, which is where the interpreter
    looks for `.pth` files at start-up. An editable (PEP 660) build maps packages to the source tree instead of
    copying them, and ships only what lies in its unpacked wheel directory (the `install` command's `install_lib`),
    so the file goes there.
    """

    def run(self):
        super().run()
        target_dir = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.mkpath(target_dir)
        shutil.copyfile(os.path.join("src", PTH_FILE), os.path.join(target_dir, PTH_FILE))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_FILE)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[os.path.join(self.build_lib, PTH_FILE)] = os.path.join("src", PTH_FILE)
        return mapping


# The Python packages TransformerEngine's PyTorch extension requires (transformer-engine-torch 2.20.2's
# `build_tools/pytorch.py`), for running TE's Python code on the CPU in tests; the TE wheel itself is installed with
# `pip install --no-deps transformer-engine==2.20.2` (see the Makefile).
TE_CPU_TESTS = [
    "einops==0.8.2",
    "onnx==1.23.2",
    "onnxscript==0.7.2",
    "packaging>=20",
    "pydantic==2.14.4",
    "nvdlfw-inspect==0.2.2",
]

# What `transformers serve` needs (transformers 5.23's `serving` extra: openai, pydantic, uvicorn, fastapi, starlette,
# rich, accelerate), pinned; psutil lets continuous batching size its cache from the free memory on a CPU.
SERVING = [
    "openai==3.57.0",
    "pydantic==2.14.4",
    "uvicorn==0.54.0",
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "rich==15.0.0",
    "accelerate==1.15.0",
    "psutil==7.2.2",
]

# `transformers-heterogeneity search` solves its mixed-integer program with SciPy's HiGHS (`scipy.optimize.milp`).
# SciPy 1.17 needs Python 3.11; 1.15 is the last release for Python 3.10.
DERIVE = ["scipy==1.17.1; python_version >= '3.11'", "scipy==1.15.3; python_version < '3.11'"]

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="transformers-heterogeneity",
    version="0.1.0.dev0",
    description="Per-layer heterogeneous models (pruned, distilled, NAS-derived) for Hugging Face Transformers",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache 2.0",
    package_dir={"": "src"},
    packages=[
        "transformers.heterogeneity",
        "transformers.heterogeneity.backends",
        "transformers.heterogeneity.commands",
        "transformers.heterogeneity.checkpoint_formats",
        "transformers.heterogeneity.derivation",
        "transformers.heterogeneity.export",
        "transformers.models.deci",
        "transformers.models.gpt_oss_puzzle",
        "transformers.models.nemotron_nas",
        "transformers.models.nemotron_h_puzzle",
    ],
    py_modules=["transformers_heterogeneity_hook"],
    python_requires=">=3.10",
    install_requires=["transformers==5.23.0", "safetensors>=0.4.3", "typer"],
    extras_require={
        # torch is deliberately not pinned here: install `torch` first (CPU or CUDA build of your choice).
        "torch": ["torch>=2.4"],
        "te-cpu-tests": TE_CPU_TESTS,
        # `transformers serve` (continuous batching included): transformers' own `serving` extra, pinned.
        "serving": SERVING,
        # `search` (derive's budgeted choice of layer variants): SciPy for the MIP.
        "derive": DERIVE,
        # peft and accelerate (in SERVING): the ecosystem tests (test_integrations.py) and the Trainer step through TE
        # layers; versions that work with transformers 5.23 and torch 2.13 and do not pull another torch.
        # matplotlib: the test of the GPU benchmark's dry run checks the PNG it writes (`make bench` pins the same).
        "testing": [
            "pytest>=8",
            "hypothesis>=6",
            "ruff==0.17.6",
            "peft==0.21.0",
            "matplotlib==3.10.8",
            *TE_CPU_TESTS,
            *SERVING,
            *DERIVE,
        ],
    },
    entry_points={"console_scripts": ["transformers-heterogeneity=transformers.heterogeneity.commands.cli:main"]},
    cmdclass={"build_py": BuildPyWithPth},
)
