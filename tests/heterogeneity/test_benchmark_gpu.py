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
"""The GPU benchmark's one command (`benchmarks/gpu.sh`) keeps working where no GPU is: its CPU dry run goes end to end
in a fresh interpreter, and the step that completes the carried packages on a machine without network plans right.

The dry run's figures are not measurements; what is checked are the parts that do not depend on speed: every section
ran, TransformerEngine is reported as not installed, the KV memory admits the number of sequences worked out here by
hand, and both files are written.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from benchmarks.gpu_env import installed_versions, pick_wheels, unmet


# The benchmark installs and measures the overlay (`gpu.sh` checks its start-up hook ran): not a test of the patched
# Transformers tree, which `make upstream-check` runs these tests against.
pytestmark = pytest.mark.overlay_only

REPO = Path(__file__).resolve().parents[2]
GPU_SH = REPO / "benchmarks" / "gpu.sh"


def test_dry_run_end_to_end(tmp_path):
    empty_wheels = tmp_path / "no-wheels"
    empty_wheels.mkdir()
    output = tmp_path / "out"
    command = ["bash", str(GPU_SH), "--dry-run", "--python", sys.executable, "--wheels", str(empty_wheels),
               "--output-dir", str(output)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]

    results = json.loads((output / "gpu.json").read_text())
    assert results["environment"]["dry_run"] is True
    assert results["environment"]["started_with_activation_hook"] is True  # the installed `.pth` file ran
    sections = results["sections"]
    assert {name: section["status"] for name, section in sections.items()} == {
        "eager": "ok",
        "continuous_batching": "ok",
        "compile": "ok",
        "transformer_engine": "skipped",
    }
    assert "TransformerEngine" in sections["transformer_engine"]["reason"]
    decode = sections["eager"]["implementations"]["sdpa"]["decode_batch_1"]
    assert set(decode["tokens_per_s"]) == {"parent", "child"}
    assert all(value > 0 for value in decode["tokens_per_s"].values())

    # By hand, for the dry run's 4 layers (4 heads of 32, fp32) and the Nemotron-NAS-style child (KV heads 4, 2, 1 on
    # layers 0-2, attention skipped on layer 3): parent 4 * 2 * 4 * 32 * 4 = 4096 bytes per token, child
    # 2 * (4 + 2 + 1) * 32 * 4 = 1792. In 1 MiB, a 64-token sequence (one 64-token page per attention layer) fits
    # 2**20 // (64 * 4096) = 4 times for the parent and 2**20 // (64 * 1792) = 9 times for the child.
    batching = sections["continuous_batching"]
    assert batching["kv_bytes_per_token"] == {"parent": 4096, "child": 1792}
    assert batching["capacity"]["parent"]["sequences"] == 4
    assert batching["capacity"]["child"]["sequences"] == 9
    assert (output / "gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_wheels_a_real_run_stops_and_says_what_to_do(tmp_path):
    completed = subprocess.run(
        ["bash", str(GPU_SH), "--python", sys.executable, "--wheels", str(tmp_path), "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert "make gpu-wheels" in completed.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_unmet_requirements_are_found_and_matched_with_carried_wheels():
    versions = installed_versions()
    assert unmet(("transformers", "transformers-heterogeneity"), versions) == []  # this environment is complete

    tokenizers = next(
        r for r in map(Requirement, importlib.metadata.requires("transformers")) if r.name == "tokenizers"
    )
    versions["tokenizers"] = Version("0.1.0")  # as on a machine with an old tokenizers
    missing = unmet(("transformers",), versions)
    assert [str(requirement) for requirement in missing] == [str(tokenizers)]

    carried = [
        Path("tokenizers-0.22.0-cp39-abi3-manylinux_2_17_x86_64.whl"),  # too old for transformers 5.23
        Path("tokenizers-0.23.3-cp310-abi3-manylinux_2_17_x86_64.whl"),
        Path("torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl"),
    ]
    assert pick_wheels(missing, carried) == ([carried[1]], [])
    # torch is never taken from the carried wheels: the machine's build matches its GPU.
    assert pick_wheels([Requirement("torch>=2.4")], carried) == ([], [Requirement("torch>=2.4")])
