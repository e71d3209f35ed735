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
"""Heterogeneous Llama4 text models: dense and MoE feed-forwards, per-layer chunked attention, skips.

The reference is built without this package: for every layer, the stock `Llama4TextDecoderLayer` (and its rotary
embedding) from a homogeneous config holding that layer's values, with the heterogeneous model's weights copied in,
run layer by layer with a mask computed from the layer's chunk size by `reference.visible`. A skipped sub-block is
left out of the residual stream.

Four layers with `moe_layers=[1, 3]` and `no_rope_layer_interval=4`: layers 0-2 use RoPE and chunked attention,
layer 3 is a NoPE layer with full attention and temperature tuning (`floor_scale=2` so that it bites within a few
tokens). Chunks [4, None, 6] over 12-token prompts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    Llama4ForCausalLM,
    Llama4TextConfig,
    StaticCache,
)
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule, kv_cache_bytes, kv_cache_total_bytes
from transformers.models.llama4.modeling_llama4 import (
    Llama4TextDecoderLayer,
    Llama4TextMLP,
    Llama4TextMoe,
    Llama4TextRotaryEmbedding,
)

from .conftest import assert_cached_steps_match, randomize_weights
from .reference import LayerSpec, rms_norm, visible


pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
RTOL = 1e-5
PROMPT_LEN = 12
NEW_TOKENS = 5
NUM_LAYERS = 4
VOCAB_SIZE = 100
MOE_LAYERS = [1, 3]
GLOBAL = {
    "hidden_size": 64,
    "intermediate_size": 32,  # experts and shared expert of MoE layers
    "intermediate_size_mlp": 96,  # dense layers
    "num_hidden_layers": NUM_LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": VOCAB_SIZE,
    "num_local_experts": 3,
    "num_experts_per_tok": 1,
    "moe_layers": MOE_LAYERS,
    "no_rope_layer_interval": 4,
    "attention_chunk_size": 4,
    "floor_scale": 2,
    "attn_scale": 0.5,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}

CASES: dict[str, dict[int, dict[str, Any]]] = {
    # chunks [4, None, 6, full]; FFN widths, experts, KV heads and head_dim per layer
    "mixed": {
        0: {"head_dim": 8, "num_key_value_heads": 4, "intermediate_size_mlp": 48},
        1: {"attention_chunk_size": None, "num_local_experts": 2, "intermediate_size": 16},
        2: {"attention_chunk_size": 6, "num_key_value_heads": 1},
        3: {"num_experts_per_tok": 2, "num_attention_heads": 2},
    },
    # attention skipped first; the MoE and a dense feed-forward skipped; qk norm and temperature tuning per layer
    "skips": {
        0: {"skip": ["attention"]},
        1: {"skip": ["mlp"], "attention_chunk_size": 6},
        2: {"skip": ["mlp"], "use_qk_norm": False},
        3: {"attn_temperature_tuning": False},
    },
}


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


def build_model(per_layer: dict | None, attn_implementation: str = "eager", **kwargs: Any) -> Llama4ForCausalLM:
    values = {**GLOBAL, **kwargs, "attn_implementation": attn_implementation}
    if per_layer:
        values["per_layer_config"] = per_layer
    torch.manual_seed(0)
    return randomize_weights(Llama4ForCausalLM(Llama4TextConfig(**values)))


def make_input_ids(batch_size: int = 2, seq_len: int = PROMPT_LEN, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB_SIZE, (batch_size, seq_len), generator=generator)


def logits_of(model, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids, **kwargs).logits


# --- the reference: stock layers from homogeneous configs ---------------------------------------------------------


def layer_values(per_layer: dict | None, layer_idx: int) -> tuple[dict[str, Any], set[str]]:
    """The global values with layer `layer_idx`'s overrides, and its skips, from the numbers of the test."""
    overrides = dict((per_layer or {}).get(layer_idx, {}))
    skips = set(overrides.pop("skip", ()))
    return {**GLOBAL, **overrides}, skips


def chunk_of(per_layer: dict | None, layer_idx: int) -> int | None:
    """RoPE layers attend in chunks, NoPE layers (every `no_rope_layer_interval`-th) to everything."""
    values, _ = layer_values(per_layer, layer_idx)
    uses_rope = (layer_idx + 1) % values["no_rope_layer_interval"] != 0
    return values["attention_chunk_size"] if uses_rope else None


class ReferenceModel:
    """Stock Llama4 text layers, each built from a homogeneous config of its own values, holding the weights of the
    model under test."""

    def __init__(self, model: Llama4ForCausalLM, per_layer: dict | None) -> None:
        self.state = model.state_dict()
        self.per_layer = per_layer
        self.layers = []
        for layer_idx in range(NUM_LAYERS):
            values, skips = layer_values(per_layer, layer_idx)
            config = Llama4TextConfig(**values, attn_implementation="eager")
            assert not config.is_heterogeneous
            layer = Llama4TextDecoderLayer(config, layer_idx).eval()
            prefix = f"model.layers.{layer_idx}."
            weights = {k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)}
            missing, unexpected = layer.load_state_dict(weights, strict=False)
            skipped = {
                "attention": ("input_layernorm.", "self_attn."),
                "mlp": ("post_attention_layernorm.", "feed_forward."),
            }
            allowed = tuple(p for name in skips for p in skipped[name])
            assert not unexpected and all(key.startswith(allowed) for key in missing), (missing, unexpected)
            assert len(missing) == 0 or skips
            self.layers.append((layer, Llama4TextRotaryEmbedding(config), skips, chunk_of(per_layer, layer_idx)))

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        position_ids = torch.arange(seq_len)[None]
        hidden = self.state["model.embed_tokens.weight"][input_ids]
        for layer, rotary, skips, chunk in self.layers:
            allowed = visible(seq_len, LayerSpec(chunk=chunk))
            mask = torch.zeros(seq_len, seq_len).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
            if "attention" not in skips:
                attention, _ = layer.self_attn(
                    layer.input_layernorm(hidden),
                    position_embeddings=rotary(hidden, position_ids),
                    attention_mask=mask,
                )
                hidden = hidden + attention
            if "mlp" not in skips:
                out = layer.feed_forward(layer.post_attention_layernorm(hidden))
                hidden = hidden + (out[0] if layer.is_moe_layer else out).view(hidden.shape)
        hidden = rms_norm(hidden, self.state["model.norm.weight"], GLOBAL["rms_norm_eps"])
        return hidden @ self.state["lm_head.weight"].T

    def greedy(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        ids = input_ids
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, self.logits(ids)[:, -1].argmax(-1, keepdim=True)], dim=-1)
        return ids


def test_reference_matches_stock_homogeneous_model():
    """The layer-by-layer reference (masks, rotary, final norm) reproduces a stock Llama4 without `per_layer_config`;
    the stock model's chunks bite too (12 tokens, chunk 4)."""
    model = build_model(None)
    input_ids = make_input_ids()
    expected = ReferenceModel(model, None).logits(input_ids)
    torch.testing.assert_close(logits_of(model, input_ids), expected, atol=ATOL, rtol=RTOL)


# --- structure --------------------------------------------------------------------------------------------------


def test_structure(case):
    per_layer = CASES[case]
    model = build_model(per_layer)
    state = model.state_dict()
    for layer_idx, layer in enumerate(model.model.layers):
        values, skips = layer_values(per_layer, layer_idx)
        prefix = f"model.layers.{layer_idx}"
        is_moe = layer_idx in MOE_LAYERS
        assert layer.is_moe_layer == is_moe
        if "mlp" in skips:
            expected = "SkippedLlama4TextMoe" if is_moe else "SkippedLlama4TextMLP"
            assert type(layer.feed_forward).__name__ == expected
            assert isinstance(layer.post_attention_layernorm, SkippedModule)
            assert not [k for k in state if k.startswith((f"{prefix}.feed_forward.", f"{prefix}.post_attention"))]
        elif is_moe:
            assert isinstance(layer.feed_forward, Llama4TextMoe)
            experts, width = values["num_local_experts"], values["intermediate_size"]
            assert state[f"{prefix}.feed_forward.experts.gate_up_proj"].shape == (experts, 64, 2 * width)
            assert state[f"{prefix}.feed_forward.experts.down_proj"].shape == (experts, width, 64)
            assert state[f"{prefix}.feed_forward.router.weight"].shape == (experts, 64)
            assert state[f"{prefix}.feed_forward.shared_expert.gate_proj.weight"].shape == (width, 64)
            assert layer.feed_forward.top_k == values["num_experts_per_tok"]
        else:
            assert isinstance(layer.feed_forward, Llama4TextMLP)
            assert state[f"{prefix}.feed_forward.gate_proj.weight"].shape == (values["intermediate_size_mlp"], 64)
        if "attention" in skips:
            assert isinstance(layer.self_attn, SkippedModule) and isinstance(layer.input_layernorm, SkippedModule)
            assert not [k for k in state if k.startswith((f"{prefix}.self_attn.", f"{prefix}.input_layernorm"))]
            continue
        head_dim, kv_heads = values["head_dim"], values["num_key_value_heads"]
        assert state[f"{prefix}.self_attn.q_proj.weight"].shape == (values["num_attention_heads"] * head_dim, 64)
        assert state[f"{prefix}.self_attn.k_proj.weight"].shape == (kv_heads * head_dim, 64)
        attention = layer.self_attn
        assert attention.use_rope == (layer_idx != 3)
        assert hasattr(attention, "qk_norm") == (values.get("use_qk_norm", True) and attention.use_rope)
        assert attention.attn_temperature_tuning == values.get("attn_temperature_tuning", True)
    # Only the layer with its own head_dim computes its own rotary embedding.
    has_rotary = [hasattr(layer, "rotary_emb") for layer in model.model.layers]
    assert has_rotary == [case == "mixed", False, False, False]


# --- forward, generation, caches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_forward_matches_reference(case, attn_implementation):
    per_layer = CASES[case]
    model = build_model(per_layer, attn_implementation)
    input_ids = make_input_ids()
    expected = ReferenceModel(model, per_layer).logits(input_ids)
    torch.testing.assert_close(logits_of(model, input_ids), expected, atol=ATOL, rtol=RTOL)
    with_mask = logits_of(model, input_ids, attention_mask=torch.ones_like(input_ids))
    torch.testing.assert_close(with_mask, expected, atol=ATOL, rtol=RTOL)


def test_chunks_bite():
    """A reference with every layer at full attention gives other logits: the 12-token prompt spans several chunks."""
    per_layer = CASES["mixed"]
    model = build_model(per_layer)
    input_ids = make_input_ids()
    reference = ReferenceModel(model, per_layer)
    full = ReferenceModel(model, per_layer)
    full.layers = [(layer, rotary, skips, None) for layer, rotary, skips, _ in full.layers]
    assert not torch.allclose(logits_of(model, input_ids), full.logits(input_ids), atol=1e-3)
    torch.testing.assert_close(logits_of(model, input_ids), reference.logits(input_ids), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_generate_matches_reference(case, cache_implementation):
    per_layer = CASES[case]
    model = build_model(per_layer)
    input_ids = make_input_ids()
    generated = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        cache_implementation=cache_implementation,
    )
    expected = ReferenceModel(model, per_layer).greedy(input_ids, NEW_TOKENS)
    assert torch.equal(generated, expected), (generated, expected)


@pytest.mark.parametrize("cache_cls", [DynamicCache, StaticCache])
def test_cached_decoding_equals_uncached(case, cache_cls):
    """Token by token through the cache (chunk boundaries at 4, 6, 8, 12, 16 crossed), each step's logits equal a
    full recompute."""
    model = build_model(CASES[case])
    input_ids = make_input_ids(seq_len=PROMPT_LEN + 6)
    full = logits_of(model, input_ids)
    kwargs = {"max_cache_len": input_ids.shape[1]} if cache_cls is StaticCache else {}
    cache = cache_cls(config=model.config, **kwargs)
    assert_cached_steps_match(model, input_ids, PROMPT_LEN, cache, full)


def test_left_padding_starts_chunks_at_the_first_token(case):
    """In a left-padded batch, a row's chunks start at its first real token: it generates what it generates alone."""
    model = build_model(CASES[case])
    input_ids = make_input_ids()
    pad = 3
    batch = input_ids.clone()
    batch[1, :pad] = 0
    attention_mask = torch.ones_like(batch)
    attention_mask[1, :pad] = 0
    kwargs = {"do_sample": False, "max_new_tokens": NEW_TOKENS}
    generated = model.generate(batch, attention_mask=attention_mask, **kwargs)
    for row, start in ((0, 0), (1, pad)):
        alone = input_ids[row : row + 1, start:]
        expected = model.generate(alone, attention_mask=torch.ones_like(alone), **kwargs)
        assert torch.equal(generated[row : row + 1, start:], expected)


def test_beam_search_with_cache_equals_without():
    model = build_model(CASES["skips"])
    input_ids = make_input_ids(batch_size=1)
    kwargs = {"attention_mask": torch.ones_like(input_ids), "do_sample": False, "max_new_tokens": 4, "num_beams": 3}
    assert torch.equal(
        model.generate(input_ids, use_cache=True, **kwargs), model.generate(input_ids, use_cache=False, **kwargs)
    )


def test_one_mask_per_distinct_setting_and_forward(sdpa_mask_sizes):
    """Chunks [4, None, 6, full, 4, 6, 4, full]: three distinct masks per forward (chunks 4 and 6, full), each built
    once with upstream's chunked or causal mask function, however many layers share it."""
    built = sdpa_mask_sizes
    per_layer = {1: {"attention_chunk_size": None}, 2: {"attention_chunk_size": 6}, 5: {"attention_chunk_size": 6}}
    model = build_model(per_layer, "sdpa", num_hidden_layers=8, moe_layers=[1, 3, 5])
    logits_of(model, make_input_ids())
    assert sorted(built, key=str) == [4, 6, None]
    built.clear()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(make_input_ids(), past_key_values=cache, use_cache=True)
        model(make_input_ids()[:, :1], past_key_values=cache, use_cache=True)
    assert sorted(built, key=str) == [4, 4, 6, 6, None, None]


def test_caches_hold_only_each_layers_chunk(case):
    """After N tokens a DynamicCache keeps min(N, chunk - 1) tokens per chunked layer and N for full layers; a
    StaticCache allocates min(max_cache_len, chunk); nothing for skipped attention. `kv_cache_bytes` predicts both."""
    per_layer = CASES[case]
    model = build_model(per_layer)
    batch_size, max_cache_len = 2, 16
    input_ids = make_input_ids(batch_size=batch_size)
    dynamic = DynamicCache(config=model.config)
    static = StaticCache(config=model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(input_ids, past_key_values=dynamic, use_cache=True)
        model(input_ids, past_key_values=static, use_cache=True)
    sizes = {size.layer_idx: size for size in kv_cache_bytes(model.config, torch.float32)}
    held = 0
    for layer_idx in range(NUM_LAYERS):
        values, skips = layer_values(per_layer, layer_idx)
        if "attention" in skips:
            assert dynamic.layers[layer_idx].keys is None and static.layers[layer_idx].keys is None
            assert layer_idx not in sizes
            continue
        chunk = chunk_of(per_layer, layer_idx)
        kv_heads, head_dim = values["num_key_value_heads"], values["head_dim"]
        kept = PROMPT_LEN if chunk is None else min(PROMPT_LEN, chunk - 1)
        slots = max_cache_len if chunk is None else min(max_cache_len, chunk)
        assert dynamic.layers[layer_idx].keys.shape == (batch_size, kv_heads, kept, head_dim)
        assert static.layers[layer_idx].keys.shape == (batch_size, kv_heads, slots, head_dim)
        per_token = 2 * kv_heads * head_dim * 4 * batch_size
        assert sizes[layer_idx].window == chunk
        assert sizes[layer_idx].bytes_for(PROMPT_LEN, batch_size) == kept * per_token
        assert sizes[layer_idx].static_bytes(max_cache_len, batch_size) == slots * per_token
        held += kept * per_token
    assert kv_cache_total_bytes(model.config, PROMPT_LEN, torch.float32, batch_size) == held


# --- save / load --------------------------------------------------------------------------------------------------


def test_save_load_round_trip(case, tmp_path):
    per_layer = CASES[case]
    model = build_model(per_layer)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llama4_text" and "per_layer_config" in saved
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(loaded) is Llama4ForCausalLM
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    assert all(torch.equal(loaded_state[name], tensor) for name, tensor in state.items())
    input_ids = make_input_ids()
    assert torch.equal(logits_of(loaded, input_ids), logits_of(model, input_ids))


# --- refused ------------------------------------------------------------------------------------------------------

REFUSED = {
    "dense width on a MoE layer": (
        {1: {"intermediate_size_mlp": 48}},
        r"Layer 1: `intermediate_size_mlp`=48 is not read by Llama4TextDecoderLayer",
    ),
    "expert count on a dense layer": (
        {0: {"num_local_experts": 2}},
        r"Layer 0: `num_local_experts`=2 is not read by Llama4TextDecoderLayer",
    ),
    "chunk on a NoPE (full attention) layer": (
        {3: {"attention_chunk_size": 5}},
        r"Layer 3: `attention_chunk_size`=5 would be ignored: the layer attends as 'full_attention' "
        r"\(config.layer_types\[3\]='full_attention'\)",
    ),
    "MoE layer list per layer": (
        {0: {"moe_layers": [0, 1, 3]}},
        r"Layer 0: `moe_layers`=\[0, 1, 3\] cannot be set per layer; it lists every layer \(global value \[1, 3\]\)",
    ),
    "RoPE layer list per layer": (
        {2: {"no_rope_layers": [1, 1, 0, 0]}},
        r"Layer 2: `no_rope_layers`=\[1, 1, 0, 0\] cannot be set per layer; it lists every layer",
    ),
    "unknown skip": (
        {1: {"skip": ["feed_forward"]}},
        r"Layer 1: unknown skip 'feed_forward' for llama4_text; this architecture can skip \['attention', 'mlp'\]",
    ),
    "final norm epsilon": ({2: {"rms_norm_eps": 1e-3}}, r"Layer 2: `rms_norm_eps`=0.001 is also read by"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(name):
    per_layer, message = REFUSED[name]
    with pytest.raises(HeterogeneousConfigError, match=message):
        Llama4ForCausalLM(Llama4TextConfig(**GLOBAL, per_layer_config=per_layer))
