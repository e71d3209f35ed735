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
"""A model whose MXFP4 experts were dequantized on load saves them as the float parameters they are, under their own
names, and reloads bit-exact: for every family that loads MXFP4 checkpoints (`core_model_loading.py`)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModelForCausalLM
from transformers.heterogeneity.conversion import convert_checkpoint

from .gpt_oss_checkpoints import write_anymodel_gpt_oss_checkpoint, write_puzzle_checkpoint


def converted_gpt_oss(path):
    """`model_type: gpt_oss` + `per_layer_config` with the MXFP4 experts and `quantization_config` of the release."""
    source = write_puzzle_checkpoint(path.parent / "puzzle-source", mxfp4=True)
    convert_checkpoint(source, path, drop_unused=True, progress=lambda line: None)
    return path


MXFP4_FAMILIES = {
    "gpt_oss_puzzle": lambda path: write_puzzle_checkpoint(path, mxfp4=True),
    "anymodel-gpt-oss": lambda path: write_anymodel_gpt_oss_checkpoint(path, mxfp4=True),
    "gpt_oss-per-layer-config": converted_gpt_oss,
}


def saved_tensors(directory):
    tensors = {}
    for shard in directory.rglob("*.safetensors"):
        tensors.update(load_file(shard))
    return tensors


@pytest.mark.parametrize("family", sorted(MXFP4_FAMILIES))
def test_dequantized_mxfp4_experts_save_as_floats_and_reload_bit_exact(family, tmp_path):
    source = MXFP4_FAMILIES[family](tmp_path / "source")
    assert "quantization_config" in json.loads((source / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="eager").eval()
    model.save_pretrained(tmp_path / "saved")

    saved = saved_tensors(tmp_path / "saved")
    assert [name for name in saved if name.endswith(("_blocks", "_scales"))] == []  # were floats under MXFP4 names
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    for name, parameter in model.state_dict().items():
        assert torch.equal(saved[name], parameter), name

    reloaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path / "saved", dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(ids).logits, model(ids).logits)
