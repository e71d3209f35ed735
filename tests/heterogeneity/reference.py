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
"""An independent forward of the Llama family (Llama, Mistral, Qwen2, Qwen3), written from the math.

The tests compare heterogeneous models against this file, so it must not import `transformers` (nor
`transformers.heterogeneity`): a bug shared by the code under test and its reference would go unseen. It reads a
state dict with the standard Hugging Face tensor names and a per-layer description built from the numbers a test
chose; a skipped sub-block is simply absent, so the residual stream passes through it, and a linear sub-block
(Nemotron-NAS `replace_with_linear`) adds `W @ norm(x)` to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


__all__ = ["LayerSpec", "reference_beam_search", "reference_forward", "reference_greedy"]


@dataclass(frozen=True)
class LayerSpec:
    """What one decoder layer computes. The forward reads MLP widths from the weights; `intermediate_size` is for
    tests that check shapes."""

    attention: bool = True
    mlp: bool = True
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    intermediate_size: int | None = None
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    qkv_bias: bool = False  # Qwen2: biases on q/k/v (not on o)
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on queries and keys, before RoPE
    window: int | None = None  # sliding window: a query sees itself and the `window - 1` tokens before it
    chunk: int | None = None  # chunked attention: a query sees the tokens before it in its own chunk
    linear_attention: bool = False  # attention replaced by `self_attn.linear_attn` (its norm stays)
    linear_mlp: bool = False  # MLP replaced by `mlp.linear_mlp` (its norm stays)
    activation: str = "silu"  # of the gate: "silu", "gelu" (exact) or "relu"
    # RoPE scaling, as written in the checkpoint's config: {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"} or {"rope_type": "dynamic", "factor",
    # "max_position_embeddings"}; None for plain RoPE.
    rope_scaling: Mapping[str, float | str] | None = None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with the variance computed in fp32, then scaled by the weight in the input dtype."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def llama3_frequencies(inv_freq: torch.Tensor, scaling: Mapping[str, float | str]) -> torch.Tensor:
    """Llama 3.1 frequency scaling: long wavelengths slowed down by `factor`, short ones kept, a linear blend between
    (Meta's `apply_scaling`)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    scaled = []
    for freq in inv_freq.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < context / high:
            scaled.append(freq)
        elif wavelength > context / low:
            scaled.append(freq / factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            scaled.append((1 - smooth) * freq / factor + smooth * freq)
    return torch.tensor(scaled, dtype=torch.float32)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, scaling: Mapping[str, float | str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for `positions` (T,): each of shape (T, head_dim), frequencies repeated over both halves."""
    seq_len = int(positions.max()) + 1
    if scaling is not None and scaling["rope_type"] == "dynamic" and seq_len > scaling["max_position_embeddings"]:
        # Dynamic NTK: beyond the trained length, raise the base so the longest wavelength covers the sequence.
        factor, trained = scaling["factor"], scaling["max_position_embeddings"]
        theta = theta * ((factor * seq_len / trained) - (factor - 1)) ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    if scaling is not None and scaling["rope_type"] == "llama3":
        inv_freq = llama3_frequencies(inv_freq, scaling)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim / 2)
    angles = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, head_dim); cos/sin: (T, head_dim)."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def linear(x: torch.Tensor, state: Mapping[str, torch.Tensor], name: str, bias: bool = False) -> torch.Tensor:
    out = x @ state[f"{name}.weight"].T
    return out + state[f"{name}.bias"] if bias else out


def attention(x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, spec: LayerSpec) -> torch.Tensor:
    """Causal grouped-query attention with RoPE; x: (B, T, hidden)."""
    batch, seq_len, _ = x.shape
    heads, kv_heads, dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
    q = linear(x, state, f"{prefix}.q_proj", spec.qkv_bias).view(batch, seq_len, heads, dim)
    k = linear(x, state, f"{prefix}.k_proj", spec.qkv_bias).view(batch, seq_len, kv_heads, dim)
    v = linear(x, state, f"{prefix}.v_proj", spec.qkv_bias).view(batch, seq_len, kv_heads, dim)
    if spec.qk_norm:
        q = rms_norm(q, state[f"{prefix}.q_norm.weight"], spec.rms_eps)
        k = rms_norm(k, state[f"{prefix}.k_norm.weight"], spec.rms_eps)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, dim)
    cos, sin = rope_cos_sin(torch.arange(seq_len), dim, spec.rope_theta, spec.rope_scaling)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # key/value head j serves query heads j * group ... (j + 1) * group - 1
    group = heads // kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * dim**-0.5  # (B, heads, T, T)
    scores = scores.masked_fill(~visible(seq_len, spec), float("-inf"))
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    out = (probs @ v).transpose(1, 2).reshape(batch, seq_len, heads * dim)
    return linear(out, state, f"{prefix}.o_proj")


def visible(seq_len: int, spec: LayerSpec) -> torch.Tensor:
    """(T, T) boolean: which key positions each query position attends to."""
    query = torch.arange(seq_len)[:, None]
    key = torch.arange(seq_len)[None, :]
    allowed = key <= query
    if spec.window is not None:
        allowed &= query - key < spec.window
    if spec.chunk is not None:
        allowed &= query // spec.chunk == key // spec.chunk
    return allowed


ACTIVATIONS = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu, "relu": torch.relu}


def gated_mlp(
    x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, activation: str = "silu"
) -> torch.Tensor:
    gate = ACTIVATIONS[activation](linear(x, state, f"{prefix}.gate_proj"))
    return linear(gate * linear(x, state, f"{prefix}.up_proj"), state, f"{prefix}.down_proj")


@torch.no_grad()
def reference_forward(
    state: Mapping[str, torch.Tensor],
    layers: Sequence[LayerSpec],
    input_ids: torch.Tensor,
    final_rms_eps: float = 1e-6,
) -> torch.Tensor:
    """Logits (B, T, vocab) for `input_ids` (B, T), without padding."""
    hidden = state["model.embed_tokens.weight"][input_ids]
    for layer_idx, spec in enumerate(layers):
        prefix = f"model.layers.{layer_idx}"
        if spec.attention or spec.linear_attention:
            normed = rms_norm(hidden, state[f"{prefix}.input_layernorm.weight"], spec.rms_eps)
            if spec.linear_attention:
                hidden = hidden + linear(normed, state, f"{prefix}.self_attn.linear_attn")
            else:
                hidden = hidden + attention(normed, state, f"{prefix}.self_attn", spec)
        if spec.mlp or spec.linear_mlp:
            normed = rms_norm(hidden, state[f"{prefix}.post_attention_layernorm.weight"], spec.rms_eps)
            if spec.linear_mlp:
                hidden = hidden + linear(normed, state, f"{prefix}.mlp.linear_mlp")
            else:
                hidden = hidden + gated_mlp(normed, state, f"{prefix}.mlp", spec.activation)
    hidden = rms_norm(hidden, state["model.norm.weight"], final_rms_eps)
    lm_head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    return hidden @ lm_head.T


@torch.no_grad()
def reference_greedy(
    state: Mapping[str, torch.Tensor],
    layers: Sequence[LayerSpec],
    input_ids: torch.Tensor,
    max_new_tokens: int,
    final_rms_eps: float = 1e-6,
) -> torch.Tensor:
    """Greedy decoding that recomputes the whole sequence at every step: prompt plus `max_new_tokens` tokens."""
    ids = input_ids
    for _ in range(max_new_tokens):
        next_token = reference_forward(state, layers, ids, final_rms_eps)[:, -1].argmax(dim=-1)
        ids = torch.cat([ids, next_token[:, None]], dim=-1)
    return ids


@torch.no_grad()
def reference_beam_search(
    state: Mapping[str, torch.Tensor],
    layers: Sequence[LayerSpec],
    input_ids: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    final_rms_eps: float = 1e-6,
) -> torch.Tensor:
    """Beam search without end-of-sequence tokens, recomputing every beam from scratch at every step.

    Each step extends every beam by every token and keeps the `num_beams` highest sums of log-probabilities; with no
    hypothesis finishing early, the result is the best beam after `max_new_tokens` steps. `input_ids`: (1, T).
    """
    beams, scores = input_ids, torch.zeros(1)
    for _ in range(max_new_tokens):
        log_probs = reference_forward(state, layers, beams, final_rms_eps)[:, -1].float().log_softmax(dim=-1)
        candidates = (scores[:, None] + log_probs).flatten()
        scores, best = candidates.topk(num_beams)
        vocab_size = log_probs.shape[-1]
        beams = torch.cat([beams[best // vocab_size], (best % vocab_size)[:, None]], dim=-1)
    return beams[:1]
