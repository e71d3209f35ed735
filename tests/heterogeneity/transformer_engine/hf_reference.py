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
"""Stock HF Llama layers and the TE modules holding the same weights, for checking TE's real code under the emulation.

The weight mapping is NVIDIA's `te_llama` example's (TransformerEngine `docs/examples/te_llama/te_llama.py`), written here independently of the backend
under test, so the emulation is checked against stock HF alone.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from transformers import LlamaConfig, PreTrainedConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding


# One decoder layer with GQA (4 query heads, 2 KV groups) and a head_dim unlike hidden / heads; eager attention, so
# the tests pass HF's 4D masks explicitly.
TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 24,
    "num_hidden_layers": 1,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32,
    "max_position_embeddings": 64,
    "attn_implementation": "eager",
}


def tiny_llama_config(**overrides: object) -> LlamaConfig:
    """A `LlamaConfig` of `TINY_SHAPE`."""
    return LlamaConfig(**{**TINY_SHAPE, **overrides})


def hf_layer(
    config: PreTrainedConfig,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layer_cls: type[nn.Module] = LlamaDecoderLayer,
) -> nn.Module:
    """A stock decoder layer (Llama's by default) with random (not default) weights, norms and biases included."""
    torch.manual_seed(seed)
    layer = layer_cls(config, layer_idx=0)
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn_like(param) * 0.1 + (1.0 if param.ndim == 1 else 0.0))
    return layer.to(dtype).eval()


def te_transformer_layer(
    te: types.ModuleType, config: LlamaConfig, dtype: torch.dtype, **overrides: object
) -> nn.Module:
    """`te.TransformerLayer` with te_llama's constructor values, plus `kv_channels` and a layer number."""
    values = {
        "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "num_gqa_groups": config.num_key_value_heads,
        "kv_channels": config.head_dim,
        "bias": False,
        "layernorm_epsilon": config.rms_norm_eps,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "fuse_qkv_params": False,
        "normalization": "RMSNorm",
        "activation": "swiglu",
        "attn_input_format": "bshd",
        "params_dtype": dtype,
        "layer_number": 1,
    }
    values.update(overrides)
    return te.TransformerLayer(**values)


def hf_to_te_state_dict(hf: nn.Module) -> dict[str, torch.Tensor]:
    """The HF layer's weights under TE `TransformerLayer` names (gate rows first in `fc1`: swiglu gates half one)."""
    return {
        "self_attention.layernorm_qkv.layer_norm_weight": hf.input_layernorm.weight,
        "self_attention.layernorm_qkv.query_weight": hf.self_attn.q_proj.weight,
        "self_attention.layernorm_qkv.key_weight": hf.self_attn.k_proj.weight,
        "self_attention.layernorm_qkv.value_weight": hf.self_attn.v_proj.weight,
        "self_attention.proj.weight": hf.self_attn.o_proj.weight,
        "layernorm_mlp.layer_norm_weight": hf.post_attention_layernorm.weight,
        "layernorm_mlp.fc1_weight": torch.cat((hf.mlp.gate_proj.weight, hf.mlp.up_proj.weight)),
        "layernorm_mlp.fc2_weight": hf.mlp.down_proj.weight,
    }


def load_te_weights(te_module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copies `weights` into `te_module`, requiring every parameter to be covered exactly once."""
    params = dict(te_module.named_parameters())
    assert sorted(params) == sorted(weights), (sorted(params), sorted(weights))
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def rope_tables(config: PreTrainedConfig, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HF's own rope for positions `0..length-1`: `(cos, sin)` for the HF layer, and TE's `[s, 1, 1, d]` angles.

    TE is fed HF's `inv_freq` (scaled ropes such as llama3 included) as `cat(freqs, freqs)`, non-interleaved,
    matching HF's `rotate_half` (`models/llama/modeling_llama.py`).
    """
    rotary = LlamaRotaryEmbedding(config)
    positions = torch.arange(length)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), rotary.inv_freq.float())
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, None, :]
    if getattr(rotary, "attention_scaling", 1.0) != 1.0:
        raise ValueError("TE's rope cannot express attention_scaling; use a rope without it in these tests")
    return cos, sin, emb


def causal_mask(length: int, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
    """HF's additive 4D causal mask for the eager attention; with `window`, each token sees its last `window` tokens
    (itself included), as HF's sliding-window masks do."""
    query, key = torch.arange(length)[:, None], torch.arange(length)[None, :]
    blocked = key > query
    if window is not None:
        blocked |= query - key >= window
    return torch.zeros(1, 1, length, length, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)


def hf_forward(layer: nn.Module, config: PreTrainedConfig, x: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """The stock layer on a full causal (optionally sliding-window) sequence."""
    cos, sin, _ = rope_tables(config, x.shape[1])
    out = layer(
        x,
        attention_mask=causal_mask(x.shape[1], x.dtype, window),
        position_embeddings=(cos.to(x.dtype), sin.to(x.dtype)),
    )
    return out[0] if isinstance(out, tuple) else out
