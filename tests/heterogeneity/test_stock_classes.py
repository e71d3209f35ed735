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
"""Family model classes pick the experts implementation the stock class picks, whatever was loaded before.

Upstream caches the answer on the class first asked, so the check runs in a fresh interpreter where the family's
class is asked first (in this process the stock classes may have answered already)."""

import subprocess
import sys
from pathlib import Path


SCRIPT = """
import sys
import torch
sys.path.insert(0, {root!r})
from transformers import AutoModelForCausalLM
from tests.heterogeneity.gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle
from tests.heterogeneity.nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle
from pathlib import Path

for name, write in (("gpt_oss_puzzle", write_gpt_oss_puzzle), ("nemotron_h_puzzle", write_nemotron_h_puzzle)):
    model = AutoModelForCausalLM.from_pretrained(write(Path({tmp!r}) / name), dtype=torch.float32)
    print(name, model.config._experts_implementation)
"""


def test_a_family_loaded_first_uses_the_stock_experts_implementation(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    script = SCRIPT.format(root=root, tmp=str(tmp_path))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    # What the stock GPT-OSS and NemotronH classes pick on CPU.
    assert completed.stdout.split("\n")[:2] == ["gpt_oss_puzzle grouped_mm", "nemotron_h_puzzle grouped_mm"]
