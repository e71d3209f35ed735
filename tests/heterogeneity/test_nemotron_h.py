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
"""Heterogeneous NemotronH (Mamba2 / attention / MoE / MLP blocks) against stock blocks run one by one
(`nemotron_h_models.py`). Model and reference run Mamba2 through the same upstream PyTorch path on CPU, in the same
order, so the usual fp32 tolerance holds.
"""

from __future__ import annotations

import pytest
import torch

from transformers import NemotronHForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule, kv_cache_bytes
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHRMSNorm

from .nemotron_h_models import (
    HEAD_DIM,
    assert_bit_identical,
    input_ids,
    make_config,
    randomize_weights,
    reference_greedy,
    reference_logits,
)


pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = RTOL = 1e-5
MAX_NEW_TOKENS = 5
# Every block type, each per-layer attribute, and a skipped mixer of each kind that holds weights or state.
BLOCKS = [
    "linear_attention",
    "full_attention",
    "moe",
    "linear_attention",
    "full_attention",
    "moe",
    "mlp",
    "full_attention",
]
PER_LAYER = {
    1: {"num_key_value_heads": 1},
    2: {"moe_intermediate_size": 16, "num_experts_per_tok": 3},
    3: {"skip": ["mixer"]},
    4: {"skip": ["mixer"]},
    5: {"skip": ["mixer"]},
    6: {"intermediate_size": 40},
}
SKIPPED = {3: "NemotronHMamba2Mixer", 4: "NemotronHAttention", 5: "NemotronHMoE"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_weights(NemotronHForCausalLM(make_config(BLOCKS, PER_LAYER)))


def expected_logits(model, ids):
    return reference_logits(model.state_dict(), BLOCKS, PER_LAYER, ids)


def expected_greedy(model, ids):
    return reference_greedy(model.state_dict(), BLOCKS, PER_LAYER, ids, MAX_NEW_TOKENS)


def test_structure(model):
    layers = model.model.layers
    state = model.state_dict()
    assert state["model.layers.1.mixer.k_proj.weight"].shape == (1 * HEAD_DIM, 64)
    assert state["model.layers.7.mixer.k_proj.weight"].shape == (2 * HEAD_DIM, 64)
    assert state["model.layers.2.mixer.experts.up_proj"].shape == (4, 16, 64)
    assert state["model.layers.2.mixer.experts.down_proj"].shape == (4, 64, 16)
    assert layers[2].mixer.gate.top_k == 3 and layers[2].mixer.experts.intermediate_dim == 16
    assert state["model.layers.6.mixer.up_proj.weight"].shape == (40, 64)
    for layer_idx, replaced in SKIPPED.items():
        block = layers[layer_idx]
        assert isinstance(block.mixer, SkippedModule) and block.mixer.replaces.__name__ == replaced
        assert isinstance(block.norm, SkippedModule) and block.norm.replaces is NemotronHRMSNorm
        assert list(block.parameters()) == [] and block.norm.weight.numel() == 0
        assert not any(name.startswith(f"model.layers.{layer_idx}.") for name in state)
    for layer_idx in set(range(len(BLOCKS))) - set(SKIPPED):
        assert not isinstance(layers[layer_idx].mixer, SkippedModule)


def test_reference_matches_stock_homogeneous_model():
    """Without per-layer values the reference is the stock model, so it cannot hide a bug of its own."""
    torch.manual_seed(0)
    stock = randomize_weights(NemotronHForCausalLM(make_config(BLOCKS)))
    ids = input_ids()
    expected = reference_logits(stock.state_dict(), BLOCKS, {}, ids)
    with torch.no_grad():
        torch.testing.assert_close(stock(ids).logits, expected, atol=ATOL, rtol=RTOL)


def test_forward_matches_reference(model):
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits, expected_logits(model, ids), atol=ATOL, rtol=RTOL)


def test_greedy_generate_matches_reference_with_and_without_cache(model):
    ids = input_ids(seq_len=4, batch_size=1)
    expected = expected_greedy(model, ids)
    for use_cache in (True, False):
        generated = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=use_cache)
        assert torch.equal(generated, expected), use_cache


def test_cached_decoding_equals_uncached(model):
    ids = input_ids(seq_len=7)
    with torch.no_grad():
        full = model(ids).logits
        prefill = model(ids[:, :5], use_cache=True)
        step = model(ids[:, 5:6], past_key_values=prefill.past_key_values, use_cache=True)
        last = model(ids[:, 6:7], past_key_values=step.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([prefill.logits, step.logits, last.logits], 1), full, atol=ATOL, rtol=RTOL)


def test_cache_holds_only_what_each_block_needs(model):
    ids = input_ids(seq_len=5, batch_size=1)
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert kinds == [
        "LinearAttentionLayer",
        "DynamicLayer",
        "DummyLayer",  # MoE: no state
        "DummyLayer",  # skipped Mamba2: no conv / SSM state
        "DummyLayer",  # skipped attention: no KV
        "DummyLayer",
        "DummyLayer",  # MLP
        "DynamicLayer",
    ]
    mamba = cache.layers[0]
    conv_dim = 4 * 16 + 2 * 2 * 8  # mamba heads * head_dim + 2 * groups * state size
    assert mamba.conv_states[0].shape == (1, conv_dim, 4)
    assert mamba.recurrent_states[0].shape == (1, 4, 16, 8)
    assert cache.layers[1].keys.shape == (1, 1, 5, HEAD_DIM)
    assert cache.layers[7].keys.shape == (1, 2, 5, HEAD_DIM)
    for layer in cache.layers[2:7]:
        assert layer.keys is None and layer.values is None
    predicted = kv_cache_bytes(model.config, torch.float32)
    assert [(size.layer_idx, size.num_key_value_heads, size.bytes_per_token) for size in predicted] == [
        (1, 1, 2 * 1 * HEAD_DIM * 4),
        (7, 2, 2 * 2 * HEAD_DIM * 4),
    ]


def test_static_cache_generate_matches_reference(model):
    ids = input_ids(seq_len=4, batch_size=1)
    generated = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, cache_implementation="static")
    assert torch.equal(generated, expected_greedy(model, ids))


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    # The attention implementation is not saved: ask for the one the model was built with.
    reloaded, info = NemotronHForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert reloaded.config.per_layer_config[3].skip == ["mixer"]
    assert_bit_identical(model, reloaded, input_ids())


def test_skipped_norm_follows_the_model_dtype():
    """The block casts its input to `norm.weight.dtype`: a skipped norm's empty buffer follows `model.to`."""
    model = NemotronHForCausalLM(make_config(["moe", "full_attention"], {1: {"skip": ["mixer"]}}))
    # No attention left and no Mamba2 state: one empty cache layer answers for the sequence length.
    assert model.model.layers[1].mixer.replaces.__name__ == "NemotronHAttention"
    model.to(torch.bfloat16)
    assert model.model.layers[1].norm.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(model(input_ids()).logits).all()
    ids = input_ids(seq_len=4, batch_size=1)
    assert torch.equal(
        model.generate(ids, do_sample=False, max_new_tokens=3),
        model.generate(ids, do_sample=False, max_new_tokens=3, use_cache=False),
    )


@pytest.mark.parametrize(
    ("per_layer", "message"),
    [
        ({0: {"num_key_value_heads": 1}}, r"Layer 0: `num_key_value_heads`=1 is not read by NemotronHBlock"),
        ({2: {"num_key_value_heads": 1}}, r"Layer 2: `num_key_value_heads`=1 is not read by NemotronHBlock"),
        ({1: {"moe_intermediate_size": 8}}, r"Layer 1: `moe_intermediate_size`=8 is not read by NemotronHBlock"),
        ({0: {"num_experts_per_tok": 3}}, r"Layer 0: `num_experts_per_tok`=3 is not read by NemotronHBlock"),
        ({1: {"num_key_value_heads": 3}}, r"Layer 1: `num_key_value_heads`=3 does not divide"),
        (
            {2: {"skip": ["mlp"]}},
            r"Layer 2: unknown skip 'mlp' for nemotron_h; this architecture can skip \['mixer'\]",
        ),
        (
            {0: {"layer_norm_epsilon": 1e-3}},
            r"Layer 0: `layer_norm_epsilon`=0.001 is also read by NemotronHForCausalLM",
        ),
        ({0: {"mamba_num_heads": 8}}, r"Layer 0: `mamba_num_heads`=8 is also read by NemotronHForCausalLM"),
    ],
)
def test_refused_overrides_name_layer_attribute_and_value(per_layer, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        NemotronHForCausalLM(make_config(["linear_attention", "full_attention", "moe"], per_layer))


@pytest.mark.parametrize(
    "blocks",
    [["full_attention", "linear_attention", "moe"], ["linear_attention", "full_attention", "full_attention"]],
)
def test_every_attention_block_skipped_beside_mamba_blocks_decodes_with_a_cache(blocks):
    """Upstream's `Cache.get_seq_length` reads the first attention layer; with every attention block skipped only
    Mamba layers held state, and every cached forward raised (found by the property tests). An unwritten attention
    layer now reports the length, and cached greedy decoding equals the reference's recomputation."""
    per_layer = {idx: {"skip": ["mixer"]} for idx, block in enumerate(blocks) if block == "full_attention"}
    torch.manual_seed(0)
    model = randomize_weights(NemotronHForCausalLM(make_config(blocks, per_layer)))
    ids = input_ids(seq_len=4, batch_size=1)
    expected = reference_greedy(model.state_dict(), blocks, per_layer, ids, MAX_NEW_TOKENS)
    generated = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=True)
    assert torch.equal(generated, expected)
