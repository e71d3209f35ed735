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
"""The checks `make gpu-check` runs before the TE tests, on machines described by hand (this one has no GPU)."""

import pytest

from .gpu_environment import GpuEnvironment, problems, requirement


TE = {"transformer-engine": "2.20.2", "transformer-engine-torch": "2.20.2"}
READY = GpuEnvironment("2.13.0+cu130", "13.0", True, {**TE, "transformer-engine-cu13": "2.20.2"}, "0")


def environment(**changes) -> GpuEnvironment:
    return GpuEnvironment(**{**READY.__dict__, **changes})


def test_a_ready_machine_has_no_problem():
    assert problems(READY) == []
    assert problems(environment(torch_cuda="12.8", packages={**TE, "transformer-engine-cu12": "2.20.2"})) == []


@pytest.mark.parametrize(
    ("torch_cuda", "expected"),
    [
        ("12.8", "transformer-engine[pytorch,core_cu12]==2.20.2"),
        ("13.0", "transformer-engine[pytorch,core_cu13]==2.20.2"),
    ],
)
def test_the_core_follows_torchs_cuda(torch_cuda, expected):
    assert requirement(environment(torch_cuda=torch_cuda)) == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"torch_cuda": None}, "torch 2.13.0+cu130 is a CPU build; TransformerEngine 2.20.2 has cores for CUDA [12, 13]"),
        ({"torch_cuda": "11.8"}, "is built for CUDA 11.8; TransformerEngine 2.20.2 has cores for CUDA [12, 13] only"),
        ({"cuda_available": False}, "sees no CUDA device: check the driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES"),
        ({"packages": {}}, "TransformerEngine is not installed (transformer-engine, transformer-engine-torch missing): "
         "pip install --no-build-isolation 'transformer-engine[pytorch,core_cu13]==2.20.2'"),
        ({"packages": TE}, "TransformerEngine is not installed (no core missing)"),
        ({"packages": {**TE, "transformer-engine-cu12": "2.20.2"}},
         "transformer-engine-cu12 is built for another CUDA major version than torch's (13.0): pip uninstall "
         "transformer-engine-cu12, then pip install --no-build-isolation 'transformer-engine[pytorch,core_cu13]"),
        ({"packages": {**READY.packages, "transformer-engine-cu12": "2.20.2"}},
         "two TE cores are installed (transformer-engine-cu12, transformer-engine-cu13); TE loads the first"),
        ({"packages": {**READY.packages, "transformer-engine-cu13": "2.19.0"}},
         "the backend is tested with TransformerEngine 2.20.2, found transformer-engine-cu13 2.19.0: pip install"),
        ({"tf32_override": None}, "NVIDIA_TF32_OVERRIDE is None, not '0': cuBLAS may run fp32 GEMMs in TF32"),
        ({"tf32_override": "1"}, "NVIDIA_TF32_OVERRIDE is '1', not '0'"),
    ],
)  # fmt: skip
def test_each_problem_says_what_to_do(changes, message):
    found = problems(environment(**changes))
    assert len(found) == 1 and message in found[0], found
