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
"""Heterogeneous Llama, Mistral, Qwen2 and Qwen3 against the independent reference (DESIGN.md "How we test").

Every architecture is built with per-layer FFN widths, KV heads, attention heads / head_dim and skipped
sub-blocks, then checked for structure, logits, greedy generation, cached decoding (dynamic and static caches, beam
search), KV-cache bytes, save/load and switching the attention implementation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from transformers import AutoModelForCausalLM, DynamicCache
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule, kv_cache_bytes

from .conftest import (
    HIDDEN_SIZE,
    VOCAB_SIZE,
    Arch,
    PerLayer,
    build_config,
    build_model,
    layer_specs,
    make_input_ids,
)
from .reference import LayerSpec, reference_forward, reference_greedy


pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
RTOL = 1e-5
MAX_NEW_TOKENS = 8


def heads_override(arch: Arch) -> dict[str, Any]:
    """A layer with other attention heads and/or head_dim than the global 4 x 16."""
    if arch.implicit_head_dim:
        return {"num_attention_heads": 8, "num_key_value_heads": 2}  # head_dim follows: 64 // 8 = 8
    if arch.name == "llama":
        return {"num_attention_heads": 8, "head_dim": 32, "num_key_value_heads": 2}  # q_proj 256 wide, not 64
    return {"num_attention_heads": 8, "head_dim": 8, "num_key_value_heads": 4}


def head_dim_override(arch: Arch, head_dim: int) -> dict[str, int]:
    """Overrides giving a layer `head_dim`. Qwen2 configs store no head_dim (and a per-layer one needs a global one),
    so there the layer gets hidden_size // head_dim heads instead."""
    if arch.implicit_head_dim:
        return {"num_attention_heads": HIDDEN_SIZE // head_dim}
    return {"head_dim": head_dim}


def case_layers(arch: Arch, case: str) -> tuple[int, dict[int, dict[str, Any]]]:
    """(num_layers, per_layer_config) of a named case."""
    if case == "mixed":
        return 5, {
            1: {"intermediate_size": 32},
            2: {"num_key_value_heads": 1, "skip": ["mlp"]},
            3: heads_override(arch),
            4: {"skip": ["attention"]},
        }
    if case == "attention_skipped_first":
        return 4, {
            0: {"skip": ["attention"]},
            1: {**head_dim_override(arch, 8), "num_key_value_heads": 4, "intermediate_size": 16},
            2: {"skip": ["attention", "mlp"]},
            3: {"num_key_value_heads": 1, "skip": ["mlp"]},
        }
    if case == "linear":  # linear sub-blocks (Nemotron-NAS `replace_with_linear`) beside skips and stock blocks
        return 5, {
            0: {"skip": ["attention_replaced_by_linear"]},
            1: {"num_key_value_heads": 1, "skip": ["mlp_replaced_by_linear"]},
            2: {"skip": ["attention_replaced_by_linear", "mlp_replaced_by_linear"]},
            3: {"skip": ["attention", "mlp_replaced_by_linear"]},
            4: {"intermediate_size": 32},
        }
    raise ValueError(case)


CASES = ["mixed", "attention_skipped_first", "linear"]


@pytest.fixture(params=CASES)
def case(request) -> str:
    return request.param


def setup_case(arch: Arch, case: str, attn_implementation: str = "eager"):
    num_layers, per_layer = case_layers(arch, case)
    model = build_model(arch, per_layer, num_layers, attn_implementation)
    return model, layer_specs(arch, per_layer, num_layers), per_layer


def reference_logits(model, specs: list[LayerSpec], input_ids: torch.Tensor) -> torch.Tensor:
    return reference_forward(model.state_dict(), specs, input_ids)


def model_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits


def expected_state_shapes(specs: list[LayerSpec]) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry and its shape, from the numbers alone; skipped sub-blocks have none."""
    shapes = {"model.embed_tokens.weight": (VOCAB_SIZE, HIDDEN_SIZE)}
    for layer_idx, spec in enumerate(specs):
        prefix = f"model.layers.{layer_idx}"
        q_width, kv_width = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        if spec.attention:
            shapes[f"{prefix}.input_layernorm.weight"] = (HIDDEN_SIZE,)
            for name, width in (("q_proj", q_width), ("k_proj", kv_width), ("v_proj", kv_width)):
                shapes[f"{prefix}.self_attn.{name}.weight"] = (width, HIDDEN_SIZE)
                if spec.qkv_bias:
                    shapes[f"{prefix}.self_attn.{name}.bias"] = (width,)
            shapes[f"{prefix}.self_attn.o_proj.weight"] = (HIDDEN_SIZE, q_width)
            if spec.qk_norm:
                shapes[f"{prefix}.self_attn.q_norm.weight"] = (spec.head_dim,)
                shapes[f"{prefix}.self_attn.k_norm.weight"] = (spec.head_dim,)
        if spec.linear_attention:
            shapes[f"{prefix}.input_layernorm.weight"] = (HIDDEN_SIZE,)
            shapes[f"{prefix}.self_attn.linear_attn.weight"] = (HIDDEN_SIZE, HIDDEN_SIZE)
        if spec.linear_mlp:
            shapes[f"{prefix}.post_attention_layernorm.weight"] = (HIDDEN_SIZE,)
            shapes[f"{prefix}.mlp.linear_mlp.weight"] = (HIDDEN_SIZE, HIDDEN_SIZE)
        if spec.mlp:
            shapes[f"{prefix}.post_attention_layernorm.weight"] = (HIDDEN_SIZE,)
            shapes[f"{prefix}.mlp.gate_proj.weight"] = (spec.intermediate_size, HIDDEN_SIZE)
            shapes[f"{prefix}.mlp.up_proj.weight"] = (spec.intermediate_size, HIDDEN_SIZE)
            shapes[f"{prefix}.mlp.down_proj.weight"] = (HIDDEN_SIZE, spec.intermediate_size)
    shapes["model.norm.weight"] = (HIDDEN_SIZE,)
    shapes["lm_head.weight"] = (VOCAB_SIZE, HIDDEN_SIZE)
    return shapes


def test_reference_matches_stock_homogeneous_model(arch):
    """The reference itself is right: it reproduces each stock architecture without `per_layer_config`."""
    model = build_model(arch, None, num_layers=3)
    input_ids = make_input_ids()
    expected = reference_logits(model, layer_specs(arch, None, 3), input_ids)
    torch.testing.assert_close(model_logits(model, input_ids), expected, atol=ATOL, rtol=RTOL)


def sub_block_kind(stock: bool, linear: bool) -> str:
    return "stock" if stock else "linear" if linear else "skipped"


def norm_kind(stock: bool, linear: bool) -> str:
    """A linear sub-block keeps its norm; a skipped one loses it."""
    return "stock" if stock or linear else "skipped"


def test_structure(arch, case):
    model, specs, _ = setup_case(arch, case)
    state_shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert state_shapes == expected_state_shapes(specs)

    for layer_idx, (layer, spec) in enumerate(zip(model.model.layers, specs)):
        # member -> (its stock class, what it is in this layer: "stock", "linear" or "skipped")
        expected = {
            "self_attn": (f"{arch.prefix}Attention", sub_block_kind(spec.attention, spec.linear_attention)),
            "input_layernorm": (f"{arch.prefix}RMSNorm", norm_kind(spec.attention, spec.linear_attention)),
            "mlp": (f"{arch.prefix}MLP", sub_block_kind(spec.mlp, spec.linear_mlp)),
            "post_attention_layernorm": (f"{arch.prefix}RMSNorm", norm_kind(spec.mlp, spec.linear_mlp)),
        }
        for member_name, (stock_class, kind) in expected.items():
            member = getattr(layer, member_name)
            assert isinstance(member, SkippedModule) == (kind != "stock"), (layer_idx, member_name, type(member))
            if kind == "linear":
                linear_name = "linear_attn" if member_name == "self_attn" else "linear_mlp"
                assert type(member).__name__ == f"Linear{stock_class}"
                assert {k: tuple(v.shape) for k, v in member.state_dict().items()} == {
                    f"{linear_name}.weight": (HIDDEN_SIZE, HIDDEN_SIZE)
                }
            elif kind == "skipped":
                assert type(member).__name__ == f"Skipped{stock_class}"
                assert list(member.parameters()) == [] and list(member.buffers()) == []
                assert member.state_dict() == {}
            else:
                assert type(member).__name__ == stock_class
        if spec.attention:
            attention = layer.self_attn
            assert (attention.head_dim, attention.num_key_value_groups) == (
                spec.head_dim,
                spec.num_heads // spec.num_kv_heads,
            )


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_forward_matches_reference(arch, case, attn_implementation):
    model, specs, _ = setup_case(arch, case, attn_implementation)
    input_ids = make_input_ids()
    logits = model_logits(model, input_ids)
    assert logits.shape == (*input_ids.shape, VOCAB_SIZE)
    torch.testing.assert_close(logits, reference_logits(model, specs, input_ids), atol=ATOL, rtol=RTOL)


def test_greedy_generate_matches_reference(arch, case):
    model, specs, _ = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=5)
    generated = model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=MAX_NEW_TOKENS
    )
    expected = reference_greedy(model.state_dict(), specs, input_ids, MAX_NEW_TOKENS)
    assert torch.equal(generated, expected), (generated, expected)


def test_cached_decoding_equals_uncached(arch, case):
    """Step-by-step decoding with `past_key_values` gives the logits of a full recompute (and of the reference)."""
    model, specs, _ = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=9)
    prompt_len = 4
    full = model_logits(model, input_ids)
    torch.testing.assert_close(full, reference_logits(model, specs, input_ids), atol=ATOL, rtol=RTOL)

    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        outputs = model(input_ids[:, :prompt_len], past_key_values=cache, use_cache=True)
        torch.testing.assert_close(outputs.logits, full[:, :prompt_len], atol=ATOL, rtol=RTOL)
        for position in range(prompt_len, input_ids.shape[1]):
            outputs = model(input_ids[:, position : position + 1], past_key_values=outputs.past_key_values)
            torch.testing.assert_close(outputs.logits[:, 0], full[:, position], atol=ATOL, rtol=RTOL)
    assert outputs.past_key_values.get_seq_length() == input_ids.shape[1]


def test_generate_with_cache_equals_without(arch, case):
    model, _, _ = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=5)
    kwargs = {"attention_mask": torch.ones_like(input_ids), "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS}
    with_cache = model.generate(input_ids, use_cache=True, **kwargs)
    without_cache = model.generate(input_ids, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without_cache)


def test_static_cache_generate_matches_reference(arch, case):
    """StaticCache allocates per layer (that layer's KV heads and head_dim, nothing for skipped attention) and greedy
    decoding through it is token-identical to the reference."""
    model, specs, _ = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=5)
    outputs = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        cache_implementation="static",
        return_dict_in_generate=True,
    )
    expected = reference_greedy(model.state_dict(), specs, input_ids, MAX_NEW_TOKENS)
    assert torch.equal(outputs.sequences, expected)
    layers = outputs.past_key_values.layers
    assert len(layers) == len(specs)
    for layer, spec in zip(layers, specs):
        if not spec.attention:
            assert layer.keys is None and layer.values is None
            continue
        batch_size, kv_heads, max_len, head_dim = layer.keys.shape
        assert (batch_size, kv_heads, head_dim) == (input_ids.shape[0], spec.num_kv_heads, spec.head_dim)
        assert layer.values.shape == layer.keys.shape
        assert max_len >= input_ids.shape[1] + MAX_NEW_TOKENS - 1


def test_beam_search_with_cache_equals_without(arch, case):
    """Beam search reorders the cache of every layer that holds one (and must skip those that hold none)."""
    model, _, _ = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=5)
    kwargs = {"attention_mask": torch.ones_like(input_ids), "do_sample": False, "max_new_tokens": 6, "num_beams": 3}
    assert torch.equal(
        model.generate(input_ids, use_cache=True, **kwargs), model.generate(input_ids, use_cache=False, **kwargs)
    )


def held_kv_bytes(cache) -> list[int]:
    """Bytes of keys and values held by each cache layer (0 for layers that hold no tensors)."""
    held = []
    for layer in cache.layers:
        tensors = [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None]
        held.append(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))
    return held


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_bytes(arch, case, dtype):
    """The cache after generation holds exactly 2 * kv_heads * head_dim * tokens * batch elements per attention
    layer, nothing for skipped attention, and `kv_cache_bytes` predicts it."""
    model, specs, _ = setup_case(arch, case)
    model.to(dtype)
    batch_size, prompt_len = 3, 5
    input_ids = make_input_ids(batch_size=batch_size, seq_len=prompt_len)
    outputs = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        return_dict_in_generate=True,
    )
    cached_tokens = prompt_len + MAX_NEW_TOKENS - 1  # the last generated token is never fed back
    element_size = torch.empty((), dtype=dtype).element_size()
    expected = [
        2 * spec.num_kv_heads * spec.head_dim * cached_tokens * batch_size * element_size if spec.attention else 0
        for spec in specs
    ]
    cache = outputs.past_key_values
    assert len(cache.layers) == len(specs)
    assert held_kv_bytes(cache) == expected
    assert cache.get_seq_length() == cached_tokens

    predicted = kv_cache_bytes(model.config, dtype)
    assert [size.layer_idx for size in predicted] == [idx for idx, spec in enumerate(specs) if spec.attention]
    assert sum(size.bytes_for(cached_tokens, batch_size) for size in predicted) == sum(expected)
    for size in predicted:
        assert size.bytes_for(cached_tokens, batch_size) == expected[size.layer_idx]


@pytest.mark.parametrize("max_shard_size", [None, "50KB"])
def test_save_load_round_trip(arch, case, tmp_path, max_shard_size):
    model, specs, per_layer = setup_case(arch, case)
    save_kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(tmp_path, **save_kwargs)

    shards = sorted(path.name for path in tmp_path.glob("*.safetensors"))
    index_path = tmp_path / "model.safetensors.index.json"
    if max_shard_size is None:
        assert shards == ["model.safetensors"] and not index_path.exists()
    else:
        assert index_path.exists() and len(shards) > 1
        weight_map = json.loads(index_path.read_text())["weight_map"]
        assert set(weight_map) == set(model.state_dict())
    assert "per_layer_config" in json.loads((tmp_path / "config.json").read_text())

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(loaded) is arch.model_cls
    for layer_idx, overrides in per_layer.items():  # overrides equal to the global value may be left out on disk
        layer_config = loaded.config.per_layer_config[layer_idx]
        assert {name: getattr(layer_config, name) for name in overrides} == overrides
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded_state[name], tensor) for name, tensor in model.state_dict().items())
    input_ids = make_input_ids()
    logits = model_logits(loaded, input_ids)
    assert torch.equal(logits, model_logits(model, input_ids))
    torch.testing.assert_close(logits, reference_logits(loaded, specs, input_ids), atol=ATOL, rtol=RTOL)


def test_set_attn_implementation_reaches_heterogeneous_layers(arch, case):
    model, specs, _ = setup_case(arch, case, "eager")
    input_ids = make_input_ids()
    expected = reference_logits(model, specs, input_ids)
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        for layer, spec in zip(model.model.layers, specs):
            if spec.attention:
                assert layer.self_attn.config._attn_implementation == implementation
        torch.testing.assert_close(model_logits(model, input_ids), expected, atol=ATOL, rtol=RTOL)


def test_eager_attention_weights_have_per_layer_head_counts(arch, case):
    """`output_attentions` returns one (batch, heads, T, T) map per attention layer, with that layer's head count;
    eager attention is really used after the switch (sdpa returns no weights)."""
    model, specs, _ = setup_case(arch, case, "eager")
    input_ids = make_input_ids()
    with torch.no_grad():
        attentions = model(input_ids, output_attentions=True).attentions
    attention_specs = [spec for spec in specs if spec.attention]
    assert len(attentions) == len(attention_specs)
    for weights, spec in zip(attentions, attention_specs):
        assert weights.shape == (*input_ids.shape[:1], spec.num_heads, input_ids.shape[1], input_ids.shape[1])
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
        assert torch.all(weights.triu(1) == 0)


def test_every_attention_skipped(arch):
    """An MLP-only model (every attention skipped) holds no KV at all; forward with the default cache and greedy
    generation must still work, since no layer needs a sequence length."""
    per_layer = {idx: {"skip": ["attention"]} for idx in range(3)}
    model = build_model(arch, per_layer, 3)
    specs = layer_specs(arch, per_layer, 3)
    input_ids = make_input_ids(seq_len=5)
    torch.testing.assert_close(
        model_logits(model, input_ids), reference_logits(model, specs, input_ids), atol=ATOL, rtol=RTOL
    )
    outputs = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        return_dict_in_generate=True,
    )
    assert torch.equal(outputs.sequences, reference_greedy(model.state_dict(), specs, input_ids, MAX_NEW_TOKENS))
    assert held_kv_bytes(outputs.past_key_values) == [0, 0, 0]
    assert kv_cache_bytes(model.config, torch.float32) == []


def test_attention_skipped_layer_computes_no_rotary_embedding(arch):
    """A skipped attention computes nothing (contract 4): a head_dim override on that layer must not give it a rotary
    embedding of its own that recomputes cos/sin on every forward for no reader."""
    per_layer = {1: {"skip": ["attention"], **head_dim_override(arch, 8)}}
    model = build_model(arch, per_layer, 2)
    input_ids = make_input_ids()
    expected = reference_logits(model, layer_specs(arch, per_layer, 2), input_ids)
    torch.testing.assert_close(model_logits(model, input_ids), expected, atol=ATOL, rtol=RTOL)
    layer = model.model.layers[1]
    assert [name for name, _ in layer.named_buffers()] == []
    assert not layer._forward_pre_hooks


# Per-layer attributes that DESIGN.md contract 3 promises ("any attribute the layer reads") and the tests above do
# not cover. Each is built through the config as a user writes it, and with the upstream opt-in
# `allow_global_per_layer_attribute_access=True` that lets model-level code read the global value.
PER_LAYER_ATTRIBUTES: dict[str, PerLayer] = {
    "rms_norm_eps": {1: {"rms_norm_eps": 1e-2}},
    "rope_theta": {1: {"rope_parameters": {"rope_type": "default", "rope_theta": 50.0}}},
    "num_attention_heads": {1: {"num_attention_heads": 8, "num_key_value_heads": 4}, 2: {"num_attention_heads": 2}},
}
# Also read by the model's own modules (the final norm), which need one global value: these need the opt-in.
MODEL_READS = {"rms_norm_eps"}


@pytest.mark.parametrize(
    ("name", "opt_in"),
    [(name, True) for name in PER_LAYER_ATTRIBUTES]
    + [(name, False) for name in PER_LAYER_ATTRIBUTES if name not in MODEL_READS],
)
def test_other_per_layer_attributes_match_reference(arch, name, opt_in):
    per_layer = PER_LAYER_ATTRIBUTES[name]
    kwargs = {"allow_global_per_layer_attribute_access": True} if opt_in else {}
    model = build_model(arch, per_layer, 3, **kwargs)
    input_ids = make_input_ids()
    expected = reference_logits(model, layer_specs(arch, per_layer, 3), input_ids)
    torch.testing.assert_close(model_logits(model, input_ids), expected, atol=ATOL, rtol=RTOL)


def test_per_layer_value_read_by_model_level_modules_needs_opt_in(arch):
    """Without the opt-in, a per-layer `rms_norm_eps` is refused up front with a message naming layer, attribute and
    value, rather than upstream's AmbiguousGlobalPerLayerAttributeError from deep inside the model's `__init__`."""
    with pytest.raises(HeterogeneousConfigError, match=r"Layer 1: `rms_norm_eps`=0.01 is also read by"):
        build_model(arch, PER_LAYER_ATTRIBUTES["rms_norm_eps"], 3)


def test_homogeneous_build_config_is_not_heterogeneous(arch):
    """Guards the fixtures: without overrides the config is stock, so the comparisons above test the package."""
    assert not build_config(arch, None, 2).is_heterogeneous
    assert build_config(arch, {1: {"intermediate_size": 32}}, 2).is_heterogeneous
