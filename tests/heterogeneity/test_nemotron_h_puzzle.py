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
"""Nemotron-H Puzzle checkpoints load natively through the Auto classes and compute what their blocks say.

The fixture is written in the (assumed) release format by `nemotron_h_puzzle_checkpoint.py`, and the model is compared
with stock NemotronH blocks run one by one on the checkpoint's own tensors (`nemotron_h_models.py`).
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule, kv_cache_bytes

from .nemotron_h_models import BASE, assert_bit_identical, input_ids, reference_greedy, reference_logits
from .nemotron_h_puzzle_checkpoint import (
    BLOCKS,
    GLOBAL_MOE_WIDTH,
    GLOBAL_TOP_K,
    HEAD_DIM,
    PER_LAYER,
    puzzle_config,
    to_model_names,
    write_puzzle_checkpoint,
)


pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW_TOKENS = 4
REFERENCE_BASE = {**BASE, "moe_intermediate_size": GLOBAL_MOE_WIDTH, "num_experts_per_tok": GLOBAL_TOP_K}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_puzzle_checkpoint(tmp_path_factory.mktemp("nemotron_h_puzzle"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model, info = AutoModelForCausalLM.from_pretrained(
        checkpoint, attn_implementation="eager", output_loading_info=True
    )
    return model.eval(), info


def checkpoint_state(directory) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


def test_loads_natively_with_every_tensor_consumed(checkpoint, loaded):
    model, info = loaded
    assert type(model).__name__ == "NemotronHPuzzleForCausalLM"
    assert type(model.config).__name__ == "NemotronHPuzzleConfig"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    expected = {name: tuple(t.shape) for name, t in to_model_names(checkpoint_state(checkpoint)).items()}
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == expected
    assert isinstance(model.model.layers[3].mixer, SkippedModule)


def test_block_configs_become_per_layer_config(loaded):
    config = loaded[0].config
    assert config.layers_block_type == BLOCKS
    for layer_idx in range(len(BLOCKS)):
        layer_config = config.per_layer_config[layer_idx]
        expected = PER_LAYER.get(layer_idx, {})
        assert layer_config.skip == expected.get("skip", [])
        if BLOCKS[layer_idx] == "moe" and not layer_config.skip:
            assert layer_config.moe_intermediate_size == expected.get("moe_intermediate_size", GLOBAL_MOE_WIDTH)
            assert layer_config.num_experts_per_tok == expected.get("num_experts_per_tok", GLOBAL_TOP_K)
    assert config.per_layer_config[2].num_key_value_heads == 1


def test_logits_and_greedy_generation_match_the_reference(checkpoint, loaded):
    model = loaded[0]
    state = to_model_names(checkpoint_state(checkpoint))
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_logits(state, BLOCKS, PER_LAYER, ids, REFERENCE_BASE)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    ids = input_ids(seq_len=4, batch_size=1)
    expected = reference_greedy(state, BLOCKS, PER_LAYER, ids, MAX_NEW_TOKENS, REFERENCE_BASE)
    for use_cache in (True, False):
        generated = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=use_cache)
        assert torch.equal(generated, expected), use_cache


def test_cache_state_only_where_a_block_needs_it(loaded):
    model = loaded[0]
    with torch.no_grad():
        cache = model(input_ids(seq_len=5, batch_size=1), use_cache=True).past_key_values
    assert [type(layer).__name__ for layer in cache.layers] == [
        "LinearAttentionLayer",
        "DummyLayer",
        "DynamicLayer",
        "DummyLayer",
        "LinearAttentionLayer",
        "DummyLayer",
        "DummyLayer",
    ]
    assert cache.layers[2].keys.shape == (1, 1, 5, HEAD_DIM)
    assert [(size.layer_idx, size.bytes_per_token) for size in kv_cache_bytes(model.config, torch.float32)] == [
        (2, 2 * 1 * HEAD_DIM * 4)
    ]


def test_save_pretrained_keeps_the_format_and_is_bit_exact(checkpoint, loaded, tmp_path):
    model = loaded[0]
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "nemotron_h_puzzle"
    assert saved["block_configs"] == puzzle_config()["block_configs"]
    assert saved["moe_intermediate_size"] is None and saved["num_experts_per_tok"] is None
    assert "per_layer_config" not in saved
    assert checkpoint_state(tmp_path).keys() == checkpoint_state(checkpoint).keys()  # released tensor names
    reloaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    assert_bit_identical(model, reloaded, input_ids())


def test_canonical_form_is_a_stock_nemotron_h_config(loaded):
    canonical = loaded[0].config.to_canonical_dict()
    assert canonical["model_type"] == "nemotron_h" and canonical["architectures"] == ["NemotronHForCausalLM"]
    assert "block_configs" not in canonical
    config = AutoConfig.for_model(**canonical)
    assert type(config).__name__ == "NemotronHConfig"
    assert config.per_layer_config[5].moe_intermediate_size == 24 and config.per_layer_config[3].skip == ["mixer"]


def with_block(layer_idx, **fields):
    config_dict = copy.deepcopy(puzzle_config())
    config_dict["block_configs"][layer_idx].update(fields)
    return config_dict


@pytest.mark.parametrize(
    ("config_dict", "message"),
    [
        (with_block(0, moe_intermediate_size=8), r"block 0 \(linear_attention\): `moe_intermediate_size`=8 is refu"),
        (with_block(2, num_experts_per_tok=2), r"block 2 \(full_attention\): `num_experts_per_tok`=2 .* 'moe' blocks"),
        (with_block(1, num_key_value_heads=1), r"block 1 \(moe\): `num_key_value_heads`=1 .* 'full_attention' bl"),
        (with_block(1, moe_latent_size=8), r"block 1 \(moe\): `moe_latent_size`=8 is refused: .* unknown to"),
        (with_block(1, block_type="mamba"), r"block 1: `block_type`='mamba' but the pattern makes it a 'moe' block"),
        (with_block(5, moe_intermediate_size=0), r"block 5: `moe_intermediate_size`=0 must be a positive integer"),
        (with_block(3, num_experts_per_tok=2), r"block 3: `no_op` removes the block, so it takes no other fields"),
        ({**puzzle_config(), "hybrid_override_pattern": "ME*E"}, r"`block_configs` has 7 entries but the block pat"),
        ({**puzzle_config(), "per_layer_config": {0: {"skip": ["mixer"]}}}, r"describes its layers with \['block_c"),
    ],
)
def test_refused_fields_name_the_block_and_field(config_dict, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(**config_dict)


def test_refused_config_from_disk_names_the_block(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(with_block(4, ssm_state_size=16)))
    with pytest.raises(HeterogeneousConfigError, match=r"block 4 \(linear_attention\): `ssm_state_size`=16"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
