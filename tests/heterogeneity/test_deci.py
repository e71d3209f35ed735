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
"""DeciLM checkpoints (`model_type: "deci"`, single `model.safetensors`): KV heads per layer and dynamic NTK rope,
against the independent reference."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError

from .checkpoints import (
    DECI_KV_HEADS,
    DECI_MAX_POSITIONS,
    DECI_RMS_EPS,
    VOCAB,
    deci_config,
    deci_specs,
    write_deci_checkpoint,
)
from .reference import reference_forward, reference_greedy


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_deci_checkpoint(tmp_path_factory.mktemp("deci"))


def load(checkpoint):
    model, info = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def state(checkpoint):
    return {name: tensor.float() for name, tensor in load_file(checkpoint / "model.safetensors").items()}


def input_ids(seq_len, seed=1):
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def test_loads_with_kv_heads_per_layer(checkpoint):
    model, info = load(checkpoint)
    assert type(model).__name__ == "DeciForCausalLM" and type(model.config).__name__ == "DeciConfig"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert [layer.self_attn.k_proj.out_features // layer.self_attn.head_dim for layer in model.model.layers] == list(
        DECI_KV_HEADS
    )


@pytest.mark.parametrize("seq_len", [9, DECI_MAX_POSITIONS + 8])
def test_logits_match_the_reference_within_and_beyond_the_trained_length(checkpoint, seq_len):
    """Beyond `max_position_embeddings` dynamic NTK raises the rope base: the reference computes it from the math."""
    model, _ = load(checkpoint)
    ids = input_ids(seq_len)
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_forward(state(checkpoint), deci_specs(), ids, final_rms_eps=DECI_RMS_EPS)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_the_reference(checkpoint):
    model, _ = load(checkpoint)
    ids = input_ids(5)
    generated = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6)
    assert torch.equal(generated, reference_greedy(state(checkpoint), deci_specs(), ids, 6, DECI_RMS_EPS))


def test_save_pretrained_keeps_the_source_format(checkpoint, tmp_path):
    model, _ = load(checkpoint)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "deci" and saved["num_key_value_heads_per_layer"] == list(DECI_KV_HEADS)
    # The released name (engines dispatch on it), not the class name `DeciForCausalLM`.
    assert saved["architectures"] == ["DeciLMForCausalLM"]
    assert "per_layer_config" not in saved and saved["num_key_value_heads"] is None
    reloaded, _ = load(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("kv_heads", "message"),
    [
        ([4, 2, 1], r"`num_key_value_heads_per_layer` must list one value per layer \(4\), got \[4, 2, 1\]"),
        ([4, 3, 1, 2], r"deci layer 1: `num_key_value_heads_per_layer\[1\]`=3 must be a positive integer dividing"),
        ((4, 2, 1, 2), r"must list one value per layer \(4\), got \(4, 2, 1, 2\)"),
    ],
)
def test_bad_kv_heads_are_refused(kv_heads, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(**{**deci_config(), "num_key_value_heads_per_layer": kv_heads})


def test_without_kv_heads_per_layer_every_layer_has_the_global_kv_heads():
    """As every Transformers config, `DeciConfig()` can be made from defaults: the homogeneous Llama model."""
    config = AutoConfig.for_model(**{**deci_config(), "num_key_value_heads_per_layer": None, "num_key_value_heads": 2})
    assert not config.is_heterogeneous and config.num_key_value_heads == 2
