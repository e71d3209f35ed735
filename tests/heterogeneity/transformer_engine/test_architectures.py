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
"""TE's `TransformerLayer` features that Mistral, Qwen2 and Qwen3 layers and padded batches need, against stock HF.

Sliding windows (`window_size`), q/k/v biases, q/k RMSNorm before rope (`qk_norm_type`), packed `thd` sequences and
fused QKV weights, each run by `te_runtime` and compared with the stock layer holding the same weights.
"""

import pytest
import torch

from transformers import MistralConfig, Qwen2Config, Qwen3Config
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

from .hf_reference import (
    TINY_SHAPE,
    hf_forward,
    hf_layer,
    hf_to_te_state_dict,
    load_te_weights,
    rope_tables,
    te_transformer_layer,
    tiny_llama_config,
)


FP32_ATOL = 1e-5


def _run(te_runtime, layer, x, emb, **kwargs):
    with te_runtime.active():
        return layer(x.to(te_runtime.device), rotary_pos_emb=emb.to(te_runtime.device), **kwargs).cpu()


def _te_layer(te_runtime, config, weights, **overrides):
    with te_runtime.active():
        layer = te_transformer_layer(te_runtime.te, config, torch.float32, **overrides).to(te_runtime.device)
        load_te_weights(layer, weights)
    return layer


def test_sliding_window_matches_mistral_layer(te_runtime):
    window = 4
    config = MistralConfig(**TINY_SHAPE, sliding_window=window)
    hf = hf_layer(config, layer_cls=MistralDecoderLayer)
    x = torch.randn(2, 11, config.hidden_size)
    # TE's window (left, right) counts the tokens besides the query's own; HF's window counts the query too.
    layer = _te_layer(te_runtime, config, hf_to_te_state_dict(hf), window_size=(window - 1, 0))
    _, _, emb = rope_tables(config, x.shape[1])

    out = _run(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    torch.testing.assert_close(out, hf_forward(hf, config, x, window=window), atol=FP32_ATOL, rtol=0)
    assert (out - hf_forward(hf, config, x)).abs().max() > 1e-3  # the window matters at this length


def test_qkv_biases_match_qwen2_layer(te_runtime):
    config = Qwen2Config(**TINY_SHAPE)
    hf = hf_layer(config, layer_cls=Qwen2DecoderLayer)
    x = torch.randn(2, 7, config.hidden_size)
    weights = hf_to_te_state_dict(hf)
    weights.update(
        {
            "self_attention.layernorm_qkv.query_bias": hf.self_attn.q_proj.bias,
            "self_attention.layernorm_qkv.key_bias": hf.self_attn.k_proj.bias,
            "self_attention.layernorm_qkv.value_bias": hf.self_attn.v_proj.bias,
            # Qwen2 has biases on q/k/v only; TE's `bias=True` adds them everywhere, so the rest hold zeros.
            "self_attention.proj.bias": torch.zeros(config.hidden_size),
            "layernorm_mlp.fc1_bias": torch.zeros(2 * config.intermediate_size),
            "layernorm_mlp.fc2_bias": torch.zeros(config.hidden_size),
        }
    )
    layer = _te_layer(te_runtime, config, weights, bias=True)
    _, _, emb = rope_tables(config, x.shape[1])

    out = _run(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    torch.testing.assert_close(out, hf_forward(hf, config, x), atol=FP32_ATOL, rtol=0)


def test_qk_norm_before_rope_matches_qwen3_layer(te_runtime):
    config = Qwen3Config(**TINY_SHAPE)
    hf = hf_layer(config, layer_cls=Qwen3DecoderLayer)
    x = torch.randn(2, 7, config.hidden_size)
    weights = hf_to_te_state_dict(hf)
    weights.update(
        {
            "self_attention.q_norm.weight": hf.self_attn.q_norm.weight,
            "self_attention.k_norm.weight": hf.self_attn.k_norm.weight,
        }
    )
    layer = _te_layer(
        te_runtime,
        config,
        weights,
        qk_norm_type="RMSNorm",
        qk_norm_eps=config.rms_norm_eps,
        qk_norm_before_rope=True,
    )
    _, _, emb = rope_tables(config, x.shape[1])

    out = _run(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    torch.testing.assert_close(out, hf_forward(hf, config, x), atol=FP32_ATOL, rtol=0)


def test_packed_thd_sequences_match_llama_layer_per_sequence(te_runtime):
    # Padded batches can be packed to `thd`: each sequence then starts at position 0 and sees only itself.
    config = tiny_llama_config()
    hf = hf_layer(config)
    lengths = [3, 8, 5]
    sequences = [torch.randn(1, length, config.hidden_size) for length in lengths]
    cu_seqlens = torch.tensor([0, 3, 11, 16], dtype=torch.int32)
    layer = _te_layer(te_runtime, config, hf_to_te_state_dict(hf), attn_input_format="thd")
    _, _, emb = rope_tables(config, max(lengths))

    out = _run(
        te_runtime,
        layer,
        torch.cat([seq[0] for seq in sequences]),
        emb,
        self_attn_mask_type="padding_causal",
        cu_seqlens_q=cu_seqlens.to(te_runtime.device),
        cu_seqlens_kv=cu_seqlens.to(te_runtime.device),
        max_seqlen_q=max(lengths),
        max_seqlen_kv=max(lengths),
    )

    expected = torch.cat([hf_forward(hf, config, seq)[0] for seq in sequences])
    torch.testing.assert_close(out, expected, atol=FP32_ATOL, rtol=0)


def _fused_qkv(hf, config, interleaved):
    """One `[Q; K; V]` weight, or (interleaved) per KV group `[q heads of the group, k, v]` (TE 2.20.2, `attention/multi_head_attention.py`)."""
    d, groups = config.head_dim, config.num_key_value_heads
    q = hf.self_attn.q_proj.weight.view(groups, -1, d, config.hidden_size)
    k = hf.self_attn.k_proj.weight.view(groups, 1, d, config.hidden_size)
    v = hf.self_attn.v_proj.weight.view(groups, 1, d, config.hidden_size)
    if interleaved:
        return torch.cat((q, k, v), dim=1).reshape(-1, config.hidden_size)
    return torch.cat(
        (q.reshape(-1, config.hidden_size), k.reshape(-1, config.hidden_size), v.reshape(-1, config.hidden_size))
    )


@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "concatenated"])
def test_fused_qkv_layouts_match_llama_layer(te_runtime, interleaved):
    config = tiny_llama_config()
    hf = hf_layer(config)
    x = torch.randn(2, 6, config.hidden_size)
    weights = {
        name: value
        for name, value in hf_to_te_state_dict(hf).items()
        if name.split(".")[-1] not in ("query_weight", "key_weight", "value_weight")
    }
    weights["self_attention.layernorm_qkv.weight"] = _fused_qkv(hf, config, interleaved)
    layer = _te_layer(te_runtime, config, weights, fuse_qkv_params=True, qkv_weight_interleaved=interleaved)
    _, _, emb = rope_tables(config, x.shape[1])

    out = _run(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    torch.testing.assert_close(out, hf_forward(hf, config, x), atol=FP32_ATOL, rtol=0)
