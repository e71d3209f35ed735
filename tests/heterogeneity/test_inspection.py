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
"""The per-layer table against real models: parameters from `numel`, dimensions from weight shapes, KV bytes from
the formula and from the tensors a `DynamicCache` really holds."""

import pytest
import torch

from transformers import GPT2Config
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule
from transformers.heterogeneity.inspection import (
    format_comparison,
    format_layer_table,
    summarize_config,
)

from .conftest import ARCHS, HIDDEN_SIZE, INTERMEDIATE_SIZE, build_config, make_input_ids


NUM_LAYERS = 6
# Every kind of layer: untouched, narrower FFN, fewer KV heads, other head_dim, attention skipped, MLP skipped.
PER_LAYER = {
    1: {"intermediate_size": 48},
    2: {"num_key_value_heads": 1, "intermediate_size": 160},
    3: {"skip": ["attention"]},
    4: {"skip": ["mlp"], "num_key_value_heads": 4},
    5: {"head_dim": 8},
}
# Bytes per element, written out rather than asked of torch.
ELEMENT_SIZES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


def per_layer_for(arch):
    # Qwen2 has no `head_dim` attribute (its layers derive it), so it cannot be overridden there.
    return {idx: o for idx, o in PER_LAYER.items() if not (arch.implicit_head_dim and "head_dim" in o)}


def build(arch, per_layer=None, **kwargs):
    config = build_config(arch, per_layer, NUM_LAYERS, **kwargs)
    torch.manual_seed(0)
    return config, arch.model_cls(config).eval()


def layer_numel(layer: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in layer.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("llama", {}),
        ("llama", {"attention_bias": True, "mlp_bias": True}),
        ("llama", {"tie_word_embeddings": True}),
        ("mistral", {}),
        ("qwen2", {}),
        ("qwen3", {}),
        ("qwen3", {"attention_bias": True}),
    ],
)
@pytest.mark.parametrize("heterogeneous", [True, False], ids=["heterogeneous", "homogeneous"])
def test_parameter_counts_equal_the_built_model(name, kwargs, heterogeneous):
    arch = ARCHS[name]
    config, model = build(arch, per_layer_for(arch) if heterogeneous else None, **kwargs)
    summary = summarize_config(config)

    assert [layer.num_parameters for layer in summary.layers] == [layer_numel(layer) for layer in model.model.layers]
    assert summary.num_parameters == sum(parameter.numel() for parameter in model.parameters())  # tied: counted once
    assert summary.num_layer_parameters == sum(layer_numel(layer) for layer in model.model.layers)


def test_per_layer_bias_override_is_counted():
    arch = ARCHS["llama"]
    config, model = build(arch, {1: {"mlp_bias": True}, 2: {"attention_bias": True}})
    summary = summarize_config(config)
    assert [layer.num_parameters for layer in summary.layers] == [layer_numel(layer) for layer in model.model.layers]
    assert summary.layers[1].num_parameters == summary.layers[0].num_parameters + 2 * INTERMEDIATE_SIZE + HIDDEN_SIZE


def test_layer_kinds_and_dimensions_match_the_modules(arch):
    config, model = build(arch, per_layer_for(arch))
    summary = summarize_config(config)

    for row, layer in zip(summary.layers, model.model.layers, strict=True):
        if isinstance(layer.self_attn, SkippedModule):
            assert (row.kind("attention"), row.num_attention_heads, row.num_key_value_heads, row.head_dim) == (
                "skipped",
                None,
                None,
                None,
            )
        else:
            head_dim = layer.self_attn.head_dim
            assert row.kind("attention") == "attention"
            assert row.head_dim == head_dim
            assert row.num_attention_heads == layer.self_attn.q_proj.out_features // head_dim
            assert row.num_key_value_heads == layer.self_attn.k_proj.out_features // head_dim
        if isinstance(layer.mlp, SkippedModule):
            assert (row.kind("mlp"), row.intermediate_size) == ("skipped", None)
        else:
            assert (row.kind("mlp"), row.intermediate_size) == ("mlp", layer.mlp.gate_proj.out_features)
    assert [row.kind("attention") for row in summary.layers] == ["attention"] * 3 + ["skipped"] + ["attention"] * 2
    assert [row.kind("mlp") for row in summary.layers] == ["mlp"] * 4 + ["skipped", "mlp"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_bytes_per_token_follow_the_formula(arch, dtype):
    config, model = build(arch, per_layer_for(arch))
    summary = summarize_config(config, dtype=dtype)

    expected = []
    for layer in model.model.layers:
        if isinstance(layer.self_attn, SkippedModule):
            expected.append(0)
        else:  # keys and values: kv_heads * head_dim elements each per token
            expected.append(2 * layer.self_attn.k_proj.out_features * ELEMENT_SIZES[dtype])
    assert [row.kv_bytes_per_token for row in summary.layers] == expected
    assert summary.kv_bytes_per_token == sum(expected)
    assert summary.dtype == dtype


def test_kv_bytes_per_token_equal_what_a_dynamic_cache_holds(arch):
    config, model = build(arch, per_layer_for(arch))
    input_ids = make_input_ids(batch_size=2, seq_len=5)
    with torch.no_grad():
        cache = model(input_ids, use_cache=True).past_key_values

    held = []
    for cache_layer in cache.layers:
        keys, values = getattr(cache_layer, "keys", None), getattr(cache_layer, "values", None)
        held.append(0 if keys is None else (keys.numel() + values.numel()) * keys.element_size() // input_ids.numel())
    summary = summarize_config(config, dtype=model.dtype)
    assert [row.kv_bytes_per_token for row in summary.layers] == held


def test_unknown_architecture_is_refused():
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=99)
    with pytest.raises(
        ValueError, match=r"model_type 'gpt2': it is not a supported architecture \(supported: \[.*'llama'"
    ):
        summarize_config(config)


@pytest.mark.parametrize(
    ("per_layer", "message"),
    [
        ({1: {"skip": ["attn"]}}, r"Layer 1: unknown skip 'attn' for llama"),
        ({2: {"num_key_value_heads": 3}}, r"Layer 2: `num_key_value_heads`=3 does not divide `num_attention_heads`=4"),
    ],
)
def test_overrides_that_construction_refuses_are_refused(per_layer, message):
    config = build_config(ARCHS["llama"], per_layer, NUM_LAYERS)
    with pytest.raises(HeterogeneousConfigError, match=message):
        summarize_config(config)


def test_layer_table_shows_every_layer_and_the_totals():
    arch = ARCHS["llama"]
    config, model = build(arch, per_layer_for(arch))
    summary = summarize_config(config, dtype=torch.float32)
    lines = format_layer_table(summary).splitlines()

    assert lines[0].split() == [
        "layer",
        "attention",
        "mlp",
        "heads",
        "kv_heads",
        "head_dim",
        "window",
        "intermediate",
        "parameters",
        "KV",
        "bytes/token",
        "(float32)",
        "FLOPs/token",
    ]
    rows = [line.split() for line in lines[2 : 2 + NUM_LAYERS]]
    assert [row[0] for row in rows] == [str(idx) for idx in range(NUM_LAYERS)]
    assert rows[3][1:3] == ["skipped", "mlp"] and rows[3][3:7] == ["-", "-", "-", "-"]
    assert rows[4][1:3] == ["attention", "skipped"] and rows[4][6:8] == ["full", "-"]
    assert [row[8] for row in rows] == [f"{layer_numel(layer):,}" for layer in model.model.layers]
    # Every Llama parameter outside the norms is a matrix: 2 FLOPs (multiply, add) per weight and token.
    flops = [
        2 * sum(p.numel() for name, p in layer.named_parameters() if not name.endswith("norm.weight"))
        for layer in model.model.layers
    ]
    assert [row[10] for row in rows] == [f"{value:,}" for value in flops]
    total = sum(layer_numel(layer) for layer in model.model.layers)
    assert lines[2 + NUM_LAYERS].split() == [
        "total",
        f"{total:,}",
        f"{summary.kv_bytes_per_token:,}",
        f"{sum(flops):,}",
    ]
    assert f"model total: {sum(p.numel() for p in model.parameters()):,} parameters" in lines[-1]
    lm_head_flops = 2 * model.lm_head.weight.numel()
    assert (
        f"model total: {sum(p.numel() for p in model.parameters()):,} parameters, {sum(flops) + lm_head_flops:,}"
        in (lines[-1])
    )


def test_layer_table_shows_each_layers_window():
    per_layer = {1: {"sliding_window": None}, 2: {"sliding_window": 5}, 3: {"skip": ["attention"]}}
    config = build_config(ARCHS["mistral"], per_layer, 4, sliding_window=3)
    summary = summarize_config(config)
    assert [layer.window for layer in summary.layers] == [3, None, 5, None]
    rows = [line.split() for line in format_layer_table(summary).splitlines()[2:6]]
    assert [row[6] for row in rows] == ["3", "full", "5", "-"]


def test_comparison_shows_both_totals_and_the_saving():
    arch = ARCHS["llama"]
    reference = summarize_config(build_config(arch, None, NUM_LAYERS))
    summary = summarize_config(build_config(arch, per_layer_for(arch), NUM_LAYERS))
    rows = {
        line.rsplit(maxsplit=3)[0]: line.split()[-3:] for line in format_comparison(reference, summary).splitlines()
    }

    before, after = reference.num_parameters, summary.num_parameters
    assert rows["parameters"] == [f"{before:,}", f"{after:,}", f"{100 * (before - after) / before:.1f}%"]
    before, after = reference.kv_bytes_per_token, summary.kv_bytes_per_token
    assert rows["KV bytes/token (bfloat16)"] == [
        f"{before:,}",
        f"{after:,}",
        f"{100 * (before - after) / before:.1f}%",
    ]


def test_comparison_refuses_different_kv_dtypes():
    config = build_config(ARCHS["llama"], None, NUM_LAYERS)
    with pytest.raises(ValueError, match="bfloat16 cache with a float32 cache"):
        format_comparison(summarize_config(config), summarize_config(config, dtype=torch.float32))


def test_moe_and_hybrid_layers_are_described_from_their_modules():
    """Llama4: dense and MoE feed-forwards (experts x width, top k; FLOPs count the experts that run). NemotronH: one
    `mixer` slot holding Mamba2, attention, an MLP or nothing."""
    from transformers import Llama4TextConfig

    from .nemotron_h_models import make_config
    from .test_llama4 import CASES, GLOBAL

    summary = summarize_config(Llama4TextConfig(**GLOBAL, per_layer_config=CASES["mixed"]), dtype=torch.float32)
    assert [layer.kind("mlp") for layer in summary.layers] == ["mlp", "moe", "mlp", "moe"]  # moe_layers [1, 3]
    assert [(layer.num_experts, layer.intermediate_size, layer.experts_per_token) for layer in summary.layers] == [
        (None, 48, None),
        (2, 16, 1),
        (None, 96, None),
        (3, 32, 2),
    ]
    hidden = GLOBAL["hidden_size"]
    # Layer 3: 2 of 3 experts run (3 matrices of hidden x 32 each); the router and the shared expert always run.
    experts = 2 * 3 * hidden * 32 * 2
    shared_and_router = 2 * (3 * hidden * 32 + 3 * hidden)
    attention = 2 * hidden * (2 * 16 * 2 + 2 * 2 * 16)  # q, o: 2 heads x 16; k, v: 2 KV heads x 16
    assert summary.layers[3].flops_per_token == experts + shared_and_router + attention
    table = format_layer_table(summary).splitlines()
    assert table[3].split()[7:10] == ["2x16", "(top", "1)"]

    summary = summarize_config(
        make_config(["mamba", "attention", "moe", "mlp"], {1: {"num_key_value_heads": 1}, 2: {"skip": ["mixer"]}})
    )
    assert [layer.blocks for layer in summary.layers] == [
        (("mixer", "mamba"),),
        (("mixer", "attention"),),
        (("mixer", "skipped"),),
        (("mixer", "mlp"),),
    ]
    assert [layer.num_key_value_heads for layer in summary.layers] == [None, 1, None, None]
    assert format_layer_table(summary).splitlines()[0].split()[:3] == ["layer", "mixer", "heads"]
