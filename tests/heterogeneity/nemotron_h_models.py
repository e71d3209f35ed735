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
"""Tiny NemotronH configs, weights and the block-by-block reference built from stock NemotronH blocks.

The reference builds each block with the stock `NemotronHBlock` from a homogeneous config holding that block's values
(our package passes homogeneous configs straight to the stock code), loads the block's weights and runs the blocks one
by one; a skipped block is the identity. Each block's values come from the test's own numbers, never from the model.
Mamba2 runs through upstream's PyTorch fallback on CPU in both the model and the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from transformers import NemotronHConfig
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHBlock, NemotronHRMSNorm


VOCAB = 64
HEAD_DIM = 16
BASE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": HEAD_DIM,
    "intermediate_size": 96,
    "mamba_num_heads": 4,
    "mamba_head_dim": 16,
    "ssm_state_size": 8,
    "n_groups": 2,
    "conv_kernel": 4,
    "chunk_size": 8,
    "n_routed_experts": 4,
    "moe_intermediate_size": 32,
    "moe_shared_expert_intermediate_size": 48,
    "num_experts_per_tok": 2,
    "layer_norm_epsilon": 1e-5,
    "bos_token_id": None,  # no special tokens: greedy generation runs its full length
    "eos_token_id": None,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}

PerLayer = Mapping[int, Mapping[str, Any]]


def make_config(
    blocks: Sequence[str], per_layer: PerLayer | None = None, attn_implementation: str = "eager", **changes: Any
) -> NemotronHConfig:
    values = {**BASE, **changes}
    if per_layer:
        values["per_layer_config"] = {idx: dict(overrides) for idx, overrides in per_layer.items()}
    return NemotronHConfig(layers_block_type=list(blocks), attn_implementation=attn_implementation, **values)


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct random values of unit-scale effect for every NemotronH parameter (stock init leaves norms at one and
    most Mamba2 parameters constant, which would hide a swapped tensor). `A_log` stays the log of a positive decay."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if name.endswith("A_log"):
            value = torch.log(1.0 + 3.0 * torch.rand(parameter.shape, generator=generator))
        elif name.endswith(("norm.weight", ".D")):
            value = 1.0 + 0.2 * noise
        elif name.endswith(("bias", "dt_bias")):
            value = 0.2 * noise
        elif parameter.ndim == 1 or "embeddings" in name:
            value = noise
        else:  # (out, in), (experts, out, in) or a depthwise conv (channels, 1, kernel)
            value = noise / math.sqrt(parameter.shape[-1])
        parameter.copy_(value.to(parameter.dtype))
    return model.eval()


def block_values(per_layer: PerLayer, layer_idx: int, base: Mapping[str, Any] = BASE) -> dict[str, Any]:
    """One block's values: the globals, then its own overrides."""
    return {**base, **{k: v for k, v in per_layer.get(layer_idx, {}).items() if k != "skip"}}


@torch.no_grad()
def reference_logits(
    state: Mapping[str, torch.Tensor],
    blocks: Sequence[str],
    per_layer: PerLayer,
    ids: torch.Tensor,
    base: Mapping[str, Any] = BASE,
) -> torch.Tensor:
    """Logits of the model whose weights (stock names, `model.` prefix) are `state`, block by block."""
    seq_len = ids.shape[1]
    causal = torch.full((seq_len, seq_len), float("-inf")).triu(1)[None, None]
    hidden = nn.functional.embedding(ids, state["model.embeddings.weight"])
    for layer_idx, block_type in enumerate(blocks):
        if "mixer" in per_layer.get(layer_idx, {}).get("skip", ()):
            continue  # norm and mixer both skipped: the block is the identity
        config = NemotronHConfig(
            layers_block_type=list(blocks), attn_implementation="eager", **block_values(per_layer, layer_idx, base)
        )
        assert not config.is_heterogeneous
        block = NemotronHBlock(config, layer_idx=layer_idx)
        prefix = f"model.layers.{layer_idx}."
        block.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        hidden = block.eval()(hidden, attention_mask=causal if block_type == "full_attention" else None)
    norm = NemotronHRMSNorm(base["hidden_size"], eps=base["layer_norm_epsilon"])
    norm.load_state_dict({"weight": state["model.norm_f.weight"]})
    return nn.functional.linear(norm(hidden), state["lm_head.weight"]).float()


def reference_greedy(state, blocks, per_layer, ids: torch.Tensor, max_new_tokens: int, base=BASE) -> torch.Tensor:
    """Greedy decoding by full recomputation, without any cache."""
    for _ in range(max_new_tokens):
        next_token = reference_logits(state, blocks, per_layer, ids, base)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=-1)
    return ids


def input_ids(seq_len: int = 6, batch_size: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))


def assert_bit_identical(model: nn.Module, reloaded: nn.Module, ids: torch.Tensor) -> None:
    """Same tensors under the same names, and the same logits bit for bit."""
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
