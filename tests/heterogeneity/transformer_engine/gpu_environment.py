# Copyright 2026 The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""What `make gpu-check` checks before it runs the TE tests against real TransformerEngine on a GPU.

    python -m tests.heterogeneity.transformer_engine.gpu_environment [--te-version 2.20.2]   # the checks; exit 1
    python -m tests.heterogeneity.transformer_engine.gpu_environment --requirement           # what to pip-install

Real TE is three packages of one version (TE 2.20.2 `transformer_engine/common/__init__.py`,
`load_framework_extension` and `sanity_checks_for_pypi_installation`, assert it): `transformer-engine` (Python
sources), `transformer-engine-cu12` or `-cu13` (the core library, built for one CUDA major version: the wheel's extras
`core_cu12` / `core_cu13`) and `transformer-engine-torch` (the extension, compiled against the installed torch). The
core must be built for the CUDA major version of torch's build, and only one core may be installed (TE takes the first
of cu12, cu13 it finds, `get_te_core_package_info`). The tests compare fp32 results within 1e-5, so cuBLAS must not
run fp32 GEMMs in TF32: `NVIDIA_TF32_OVERRIDE=0` (NVIDIA's documented switch, read when CUDA libraries initialise).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field

from .emulation import TE_VERSION


# TE 2.20.2's core wheels, by CUDA major version (`transformer_engine-2.20.2.dist-info/METADATA`: extras
# `core_cu12`, `core_cu13`).
CORE_PACKAGES = {12: "transformer-engine-cu12", 13: "transformer-engine-cu13"}
TE_PACKAGES = ("transformer-engine", "transformer-engine-torch", *CORE_PACKAGES.values())
TF32_SWITCH = "NVIDIA_TF32_OVERRIDE"


@dataclass(frozen=True)
class GpuEnvironment:
    """The facts the checks read, gathered by `gather()` (or written out by a test)."""

    torch_version: str
    torch_cuda: str | None  # `torch.version.cuda`: None for a CPU build
    cuda_available: bool
    packages: dict[str, str] = field(default_factory=dict)  # installed TE distributions and their versions
    tf32_override: str | None = None


def gather() -> GpuEnvironment:
    import torch

    packages = {}
    for name in TE_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return GpuEnvironment(
        torch.__version__, torch.version.cuda, torch.cuda.is_available(), packages, os.environ.get(TF32_SWITCH)
    )


def cuda_major(version: str | None) -> int | None:
    return None if version is None else int(version.split(".")[0])


def requirement(environment: GpuEnvironment, te_version: str = TE_VERSION) -> str:
    """The pip requirement of TE for this torch: its core built for torch's CUDA major version, and the extension.

    Raises:
        ValueError: torch is a CPU build, or its CUDA major version has no TE core.
    """
    major = cuda_major(environment.torch_cuda)
    if major not in CORE_PACKAGES:
        built = "a CPU build" if major is None else f"built for CUDA {environment.torch_cuda}"
        raise ValueError(
            f"torch {environment.torch_version} is {built}; TransformerEngine {te_version} has cores for CUDA "
            f"{sorted(CORE_PACKAGES)} only. Install a CUDA 12 or 13 build of torch: on Linux PyPI's is one (`make "
            "clean install`), or name one of PyTorch's CUDA indexes (https://pytorch.org/get-started/locally/) with "
            "`make clean install TORCH_INDEX_URL=...`."
        )
    return f"transformer-engine[pytorch,core_cu{major}]=={te_version}"


def problems(environment: GpuEnvironment, te_version: str = TE_VERSION) -> list[str]:
    """Everything that keeps the TE tests from running as tested on this machine, each with what to do."""
    try:
        wanted = requirement(environment, te_version)
    except ValueError as error:
        return [str(error)]
    found = []
    if not environment.cuda_available:
        found.append(
            f"torch {environment.torch_version} (CUDA {environment.torch_cuda}) sees no CUDA device: check the "
            "driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES."
        )
    install = f"pip install --no-build-isolation '{wanted}'"
    cores = sorted(name for name in CORE_PACKAGES.values() if name in environment.packages)
    missing = [name for name in ("transformer-engine", "transformer-engine-torch") if name not in environment.packages]
    if missing or not cores:
        found.append(f"TransformerEngine is not installed ({', '.join(missing) or 'no core'} missing): {install}")
    elif len(cores) > 1:
        found.append(f"two TE cores are installed ({', '.join(cores)}); TE loads the first: uninstall the other one.")
    elif cores[0] != CORE_PACKAGES[cuda_major(environment.torch_cuda)]:
        found.append(
            f"{cores[0]} is built for another CUDA major version than torch's ({environment.torch_cuda}): pip "
            f"uninstall {cores[0]}, then {install}"
        )
    versions = {name: version for name, version in environment.packages.items() if name in TE_PACKAGES}
    wrong = {name: version for name, version in versions.items() if version != te_version}
    if wrong:
        listed = ", ".join(f"{name} {version}" for name, version in sorted(wrong.items()))
        found.append(
            f"the backend is tested with TransformerEngine {te_version}, found {listed}: {install} (all three "
            "packages must have one version)"
        )
    if environment.tf32_override != "0":
        found.append(
            f"{TF32_SWITCH} is {environment.tf32_override!r}, not '0': cuBLAS may run fp32 GEMMs in TF32 and miss "
            f"the tests' fp32 tolerances. Run `make gpu-check`, which sets {TF32_SWITCH}=0."
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Checks this machine for `make gpu-check`.")
    parser.add_argument("--te-version", default=TE_VERSION)
    parser.add_argument("--requirement", action="store_true", help="print the pip requirement of TE for this torch")
    args = parser.parse_args(argv)
    environment = gather()
    found = problems(environment, args.te_version)
    if args.requirement:  # for installing: only what installing cannot fix stops it
        found = [problem for problem in found if "pip install" not in problem and TF32_SWITCH not in problem]
        if not found:
            print(requirement(environment, args.te_version))
    for problem in found:
        print(f"gpu-check: {problem}", file=sys.stderr)
    if found or args.requirement:
        return int(bool(found))
    import torch

    try:
        import transformer_engine.pytorch  # noqa: F401  (TE's own `__init__` swallows this error: import it here)
    except (ImportError, OSError, RuntimeError) as error:
        print(f"gpu-check: TransformerEngine is installed but does not import ({error}).", file=sys.stderr)
        return 1

    name, capability = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
    print(
        f"gpu-check: {name} (compute capability {capability[0]}.{capability[1]}), torch {environment.torch_version} "
        f"(CUDA {environment.torch_cuda}), TransformerEngine {environment.packages['transformer-engine']}, "
        f"{TF32_SWITCH}=0"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
