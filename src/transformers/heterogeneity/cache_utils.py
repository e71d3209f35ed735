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
"""Per-layer KV caches: which layers hold no KV, and how many bytes each layer holds.

Upstream's `get_layer_types_and_kwargs` already gives every layer its own window, and cache layers size themselves
from the first key/value states they see (per-layer KV heads and head_dim need nothing more). What it cannot know is
that a layer whose attention is skipped never writes: such a layer must be a `"dummy"` cache layer, so that it
allocates nothing and `get_seq_length` / mask sizes are read from a layer that really holds KV.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..configuration_utils import PreTrainedConfig
from .supported_models import get_config_spec


__all__ = ["LayerKVCacheSize", "kv_cache_bytes", "layers_without_kv_cache"]


def layers_without_kv_cache(config: PreTrainedConfig) -> list[int]:
    """Indices of the layers whose skips remove their KV-cache writer (e.g. `"skip": ["attention"]`)."""
    if not config.is_heterogeneous:
        return []
    spec = get_config_spec(config)
    if spec is None:
        return []
    return [
        layer_idx
        for layer_idx, layer_config in enumerate(config.per_layer_config)
        if spec.kv_cache_skips.intersection(layer_config.skip)
    ]


def mark_layers_without_kv_cache(
    config: PreTrainedConfig, layer_types: list[str], per_layer_kwargs: list[dict]
) -> tuple[list[str], list[dict]]:
    """Turns the cache layer type of every layer without a KV writer into `"dummy"`.

    When no layer holds KV, layer 0 keeps its type: upstream's `Cache.get_seq_length` refuses a cache without any
    attention layer. That layer is never written, so it allocates nothing and reports 0 tokens; `generate` then
    feeds the whole sequence each step, which is exact for a model without attention.
    """
    without_kv = layers_without_kv_cache(config)
    if len(without_kv) == len(layer_types):
        without_kv = without_kv[1:]
    for layer_idx in without_kv:
        layer_types[layer_idx] = "dummy"
        per_layer_kwargs[layer_idx] = {}
    return layer_types, per_layer_kwargs


@dataclass(frozen=True)
class LayerKVCacheSize:
    """KV-cache size of one layer. `bytes_per_token` is what each cached token costs; `max_tokens` is the most tokens
    the layer keeps (its window), or `None` when it keeps them all."""

    layer_idx: int
    num_key_value_heads: int
    head_dim: int
    bytes_per_token: int
    max_tokens: int | None

    def bytes_for(self, num_tokens: int, batch_size: int = 1) -> int:
        """Bytes this layer holds after `num_tokens` tokens in a dynamic cache."""
        kept = num_tokens if self.max_tokens is None else min(num_tokens, self.max_tokens)
        return batch_size * kept * self.bytes_per_token


def kv_cache_bytes(config: PreTrainedConfig, dtype: torch.dtype = torch.bfloat16) -> list[LayerKVCacheSize]:
    """Per-layer KV-cache sizes for `config`, homogeneous or not: keys and values of every layer that holds KV.

    Layers without KV (attention skipped) are left out. Sum `size.bytes_for(n)` over the result for the bytes held
    after `n` tokens.
    """
    element_size = torch.empty((), dtype=dtype).element_size()
    without_kv = set(layers_without_kv_cache(config))
    sizes = []
    for layer_idx, layer_config in enumerate(config.per_layer_config):
        if layer_idx in without_kv:
            continue
        head_dim = (
            getattr(layer_config, "head_dim", None) or layer_config.hidden_size // layer_config.num_attention_heads
        )
        kv_heads = getattr(layer_config, "num_key_value_heads", None) or layer_config.num_attention_heads
        window = getattr(layer_config, "sliding_window", None) or getattr(layer_config, "attention_chunk_size", None)
        layer_types = getattr(layer_config, "layer_types", None)
        if layer_types is not None and layer_types[layer_idx] == "full_attention":
            window = None
        sizes.append(
            LayerKVCacheSize(
                layer_idx=layer_idx,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                bytes_per_token=2 * kv_heads * head_dim * element_size,
                max_tokens=window,
            )
        )
    return sizes
