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
"""GPT-OSS with per-layer expert counts, expert widths, routing top-k, attention windows and skips.

The reference never goes through this package: every layer is a stock `GptOssDecoderLayer` built from a
homogeneous `GptOssConfig` holding that layer's values, loaded with the heterogeneous layer's weights, and run layer
by layer with a causal mask of the layer's own window written out here.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from transformers import AutoModel, AutoModelForCausalLM, DynamicCache, GptOssConfig, GptOssForCausalLM, StaticCache
from transformers.heterogeneity import HeterogeneousConfigError, kv_cache_bytes, kv_cache_total_bytes
from transformers.models.gpt_oss.modeling_gpt_oss import (
    GptOssDecoderLayer,
    GptOssRMSNorm,
    GptOssRotaryEmbedding,
)

from .gpt_oss_checkpoints import GPT_OSS_GLOBALS


pytestmark = pytest.mark.usefixtures("single_thread")

# Layers 0 and 2 slide by default, 1 and 3 attend to everything.
GLOBALS = {
    **GPT_OSS_GLOBALS,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
}

# Several windows and full layers mixed, experts of other counts, widths and top-k, and both skips.
CASES = {
    "experts_and_windows": {
        0: {"num_local_experts": 2, "num_experts_per_tok": 1, "sliding_window": 3},
        1: {"intermediate_size": 16},
        2: {"sliding_window": None, "num_local_experts": 6, "num_experts_per_tok": 3},
    },
    "skips": {
        0: {"skip": ["attention"]},
        1: {"skip": ["mlp"], "num_local_experts": 2},
        2: {"sliding_window": 6, "intermediate_size": 48},
    },
}
PROMPT_LEN, NEW_TOKENS = 7, 5
ATOL = RTOL = 1e-5


def layer_values(per_layer: dict[int, dict[str, Any]], layer_idx: int, global_values=GLOBALS) -> dict[str, Any]:
    values = {**global_values, **per_layer.get(layer_idx, {})}
    values.pop("skip", None)
    return values


def window_of(per_layer, layer_idx: int, global_values=GLOBALS) -> int | None:
    if global_values["layer_types"][layer_idx] == "full_attention":
        return None
    return layer_values(per_layer, layer_idx, global_values)["sliding_window"]


def build(case: str, **kwargs) -> GptOssForCausalLM:
    torch.manual_seed(0)
    config = GptOssConfig(**GLOBALS, per_layer_config=CASES[case], attn_implementation="eager", **kwargs)
    return GptOssForCausalLM(config).eval()


class Reference:
    """Stock GPT-OSS layers, one homogeneous config each, with the heterogeneous model's weights."""

    def __init__(self, model: GptOssForCausalLM, per_layer: dict[int, dict[str, Any]], global_values=GLOBALS) -> None:
        global_config = GptOssConfig(**global_values, attn_implementation="eager")
        self.rotary = GptOssRotaryEmbedding(global_config)
        self.embed = model.model.embed_tokens.weight.detach()
        self.norm = GptOssRMSNorm(global_values["hidden_size"], eps=global_config.rms_norm_eps)
        self.norm.load_state_dict(model.model.norm.state_dict())
        self.lm_head = model.lm_head.weight.detach()
        self.layers = []
        for layer_idx, layer in enumerate(model.model.layers):
            skips = per_layer.get(layer_idx, {}).get("skip", [])
            stock_config = GptOssConfig(
                **layer_values(per_layer, layer_idx, global_values), attn_implementation="eager"
            )
            stock = GptOssDecoderLayer(stock_config, layer_idx).eval()
            missing, unexpected = stock.load_state_dict(layer.state_dict(), strict=False)
            skipped = {"attention": ("input_layernorm.", "self_attn."), "mlp": ("post_attention_layernorm.", "mlp.")}
            expected_missing = sorted(
                k for k in stock.state_dict() if k.startswith(sum((skipped[s] for s in skips), ()))
            )
            assert (sorted(missing), unexpected) == (expected_missing, []), f"layer {layer_idx}"
            self.layers.append((stock, skips, window_of(per_layer, layer_idx, global_values)))

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        hidden = torch.nn.functional.embedding(input_ids, self.embed)
        position_ids = torch.arange(seq_len)[None]
        position_embeddings = self.rotary(hidden, position_ids)
        query, key = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None]
        for stock, skips, window in self.layers:
            allowed = key <= query
            if window is not None:
                allowed &= query - key < window  # the token itself and the `window - 1` before it
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
            if "attention" not in skips:
                attention, _ = stock.self_attn(
                    stock.input_layernorm(hidden), position_embeddings=position_embeddings, attention_mask=mask
                )
                hidden = hidden + attention
            if "mlp" not in skips:
                hidden = hidden + stock.mlp(stock.post_attention_layernorm(hidden))[0]
        return self.norm(hidden) @ self.lm_head.T

    def greedy(self, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        for _ in range(new_tokens):
            next_token = self.logits(input_ids)[:, -1].argmax(-1, keepdim=True)
            input_ids = torch.cat([input_ids, next_token], dim=1)
        return input_ids


def input_ids(batch_size: int = 2, seq_len: int = PROMPT_LEN) -> torch.Tensor:
    return torch.randint(0, GLOBALS["vocab_size"], (batch_size, seq_len), generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


def test_structure(case):
    model = build(case)
    for layer_idx, layer in enumerate(model.model.layers):
        values, skips = layer_values(CASES[case], layer_idx), CASES[case].get(layer_idx, {}).get("skip", [])
        if "mlp" in skips:
            assert type(layer.mlp).__name__ == "SkippedGptOssMLP" and not list(layer.mlp.parameters())
            assert type(layer.post_attention_layernorm).__name__ == "SkippedGptOssRMSNorm"
        else:
            experts, width = values["num_local_experts"], values["intermediate_size"]
            assert layer.mlp.experts.gate_up_proj.shape == (experts, GLOBALS["hidden_size"], 2 * width)
            assert layer.mlp.experts.down_proj.shape == (experts, width, GLOBALS["hidden_size"])
            assert layer.mlp.router.weight.shape == (experts, GLOBALS["hidden_size"])
            assert layer.mlp.router.top_k == values["num_experts_per_tok"]
        if "attention" in skips:
            assert type(layer.self_attn).__name__ == "SkippedGptOssAttention" and not list(
                layer.self_attn.parameters()
            )
        else:
            assert layer.self_attn.sliding_window == window_of(CASES[case], layer_idx)
    # The head keeps the global counts for its load-balancing loss.
    assert (model.num_experts, model.num_experts_per_tok) == (4, 2)


def test_forward_and_greedy_generate_match_stock_layers(case):
    model = build(case)
    reference = Reference(model, CASES[case])
    prompt = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(prompt).logits, reference.logits(prompt), atol=ATOL, rtol=RTOL)
    generated = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(generated, reference.greedy(prompt, NEW_TOKENS))


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_cached_decoding_equals_uncached(case, cache_implementation):
    model = build(case)
    prompt = input_ids()
    kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
    cached = model.generate(prompt, cache_implementation=cache_implementation, **kwargs)
    assert torch.equal(cached, model.generate(prompt, use_cache=False, **kwargs))


def test_caches_hold_only_each_layers_window(case):
    model = build(case)
    batch_size, num_tokens, max_cache_len = 2, PROMPT_LEN, 16
    dynamic = DynamicCache(config=model.config)
    static = StaticCache(config=model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(input_ids(batch_size, num_tokens), past_key_values=dynamic, use_cache=True)
        model(input_ids(batch_size, num_tokens), past_key_values=static, use_cache=True)
    sizes = {size.layer_idx: size for size in kv_cache_bytes(model.config, torch.float32)}
    attending = [i for i in range(4) if "attention" not in CASES[case].get(i, {}).get("skip", [])]
    assert sorted(sizes) == attending
    per_token = 2 * GLOBALS["num_key_value_heads"] * GLOBALS["head_dim"] * 4 * batch_size
    for layer_idx in range(4):
        dynamic_layer, static_layer = dynamic.layers[layer_idx], static.layers[layer_idx]
        if layer_idx not in attending:
            assert dynamic_layer.keys is None and static_layer.keys is None
            continue
        window = window_of(CASES[case], layer_idx)
        kept = num_tokens if window is None else min(num_tokens, window - 1)
        slots = max_cache_len if window is None else min(max_cache_len, window)
        assert dynamic_layer.keys.shape[2] == kept and static_layer.keys.shape[2] == slots
        assert sizes[layer_idx].window == window
        assert sizes[layer_idx].bytes_for(num_tokens, batch_size) == kept * per_token
        assert sizes[layer_idx].static_bytes(max_cache_len, batch_size) == slots * per_token
    held = sum(2 * layer.keys.numel() * 4 for layer in dynamic.layers if layer.keys is not None)
    assert kv_cache_total_bytes(model.config, num_tokens, torch.float32, batch_size) == held


def test_save_and_load_are_bit_exact(tmp_path):
    model = build("experts_and_windows")
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert type(reloaded) is GptOssForCausalLM
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    prompt = input_ids()
    with torch.no_grad():
        assert torch.equal(model(prompt).logits, reloaded(prompt).logits)


def test_model_config_works_wherever_a_stock_config_does():
    """`GptOssForCausalLM.__init__` reads expert counts globally, so the model holds a second face of its config
    (`model_level_config`): the Auto classes and head classes must take it like the stock config."""
    model = build("experts_and_windows")
    prompt = input_ids()
    rebuilt = AutoModelForCausalLM.from_config(model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(prompt).logits, model(prompt).logits)
    base = AutoModel.from_config(model.model.config)
    assert [layer.mlp.experts.num_experts for layer in base.layers] == [
        layer.mlp.experts.num_experts for layer in model.model.layers
    ]


def test_homogeneous_model_is_stock():
    torch.manual_seed(0)
    model = GptOssForCausalLM(GptOssConfig(**GLOBALS))
    assert type(model.config) is GptOssConfig
    assert all(type(layer.mlp).__name__ == "GptOssMLP" for layer in model.model.layers)


@pytest.mark.parametrize(
    ("per_layer", "kwargs", "message"),
    [
        ({1: {"sliding_window": 8}}, {}, r"Layer 1: `sliding_window`=8 would be ignored: .*'full_attention'"),
        ({2: {"skip": ["moe"]}}, {}, r"Layer 2: unknown skip 'moe' for gpt_oss; .*\['attention', 'mlp'\]"),
        ({0: {"num_local_experts": 0}}, {}, r"Layer 0: `num_local_experts` must be a positive integer, got 0"),
        ({3: {"rms_norm_eps": 1e-3}}, {}, r"Layer 3: `rms_norm_eps`=0.001 is also read by GptOssForCausalLM"),
        (
            {1: {"router_aux_loss_coef": 0.5}},
            {},
            r"Layer 1: `router_aux_loss_coef`=0.5 is not read by GptOssDecoderLayer",
        ),
        (
            {2: {"num_local_experts": 8}},
            {"quantization_config": {"quant_method": "mxfp4"}},
            r"Layer 2: `num_local_experts`=8 cannot be set per layer for a mxfp4-quantized gpt_oss model",
        ),
    ],
)
def test_errors_name_layer_attribute_and_value(per_layer, kwargs, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        GptOssForCausalLM(GptOssConfig(**GLOBALS, per_layer_config=per_layer, **kwargs))


@pytest.mark.overlay_only
def test_deactivate_unwraps_the_head_and_activate_rewraps_it():
    from transformers import heterogeneity

    per_layer = {1: {"num_local_experts": 2}}
    GptOssForCausalLM(GptOssConfig(**GLOBALS, per_layer_config=per_layer))
    assert hasattr(GptOssForCausalLM.__init__, "__wrapped__")
    try:
        heterogeneity.deactivate()
        assert not hasattr(GptOssForCausalLM.__init__, "__wrapped__")
    finally:
        heterogeneity.activate()
    model = GptOssForCausalLM(GptOssConfig(**GLOBALS, per_layer_config=per_layer))
    assert model.model.layers[1].mlp.experts.num_experts == 2


def test_load_balancing_loss_is_refused_with_per_layer_expert_counts():
    """Upstream's loss takes one expert count for all layers (it would fail deep inside torch)."""
    model = build("experts_and_windows")
    with pytest.raises(
        HeterogeneousConfigError, match=r"Layer 0: `num_experts_per_tok`=1 differs .*`output_router_logits=True`"
    ):
        model(input_ids(), output_router_logits=True)
    model.config.output_router_logits = True
    with pytest.raises(HeterogeneousConfigError, match=r"Layer 0: `num_experts_per_tok`=1"):
        model(input_ids())
    model.config.output_router_logits = False
    model(input_ids(), output_router_logits=False)
