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

from ..cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, CacheLayerMixin
from ..configuration_utils import PreTrainedConfig
from .configuration_utils import get_layer_overrides
from .supported_models import NATIVE_PER_LAYER_MODEL_TYPES


__all__ = [
    "SKIPS_WITHOUT_CACHE_STATE",
    "LayerKVCacheSize",
    "kv_cache_bytes",
    "kv_cache_total_bytes",
    "layers_without_kv_cache",
]

# Skips that remove all of a layer's cache state: its KV-cache writer (`attention`, and attention replaced by a linear
# map, which reads no other position), or the one mixer of a block (NemotronH's `mixer`: attention with its KV, or
# Mamba2 with its conv and SSM states). Part of the skip vocabulary rather than of a model's declaration, so that a
# cache made from a config alone (`DynamicCache(config=...)`, as `generate` makes them) knows it.
SKIPS_WITHOUT_CACHE_STATE = frozenset({"attention", "attention_replaced_by_linear", "mixer"})


def layers_without_kv_cache(config: PreTrainedConfig) -> list[int]:
    """Indices of the layers whose skips remove their cache state (e.g. `"skip": ["attention"]`)."""
    if not config.is_heterogeneous or config.model_type in NATIVE_PER_LAYER_MODEL_TYPES:
        return []
    # From the stored overrides rather than `config.per_layer_config`, which copies the config for every layer: caches
    # are made at every `generate` call and by every forward that is not given one.
    return [
        layer_idx
        for layer_idx in range(config.num_hidden_layers)
        if SKIPS_WITHOUT_CACHE_STATE.intersection(get_layer_overrides(config, layer_idx).get("skip", []))
    ]


def adjust_cache_layer_types(
    config: PreTrainedConfig, layer_types: list[str], per_layer_kwargs: list[dict]
) -> tuple[list[str], list[dict]]:
    """Corrects upstream's per-layer cache types for what layers really do.

    - A layer without a KV writer (attention skipped) becomes `"dummy"`. When that leaves no layer that tracks the
      sequence length (only `"dummy"` and linear-attention / Mamba layers), the first skipped layer of an attention
      type keeps it: upstream's `Cache.get_seq_length` refuses a cache without any attention layer (NemotronH with
      every attention block skipped raised in every cached forward). That layer is never written, so it allocates
      nothing and reports 0 tokens; `generate` then feeds the whole sequence each step, which is exact for a model
      without attention (a Mamba layer recomputes its state from a whole sequence).
    - A `"sliding_attention"` / `"chunked_attention"` layer (from `layer_types`) whose own window is `None` attends
      to everything, so it becomes `"full_attention"`: a per-layer `sliding_window: None` means full attention.
    """
    without_kv = layers_without_kv_cache(config)
    others = [layer_type for layer_idx, layer_type in enumerate(layer_types) if layer_idx not in without_kv]
    if not any(_tracks_sequence_length(layer_type) for layer_type in others):
        keeping = next((idx for idx in without_kv if _tracks_sequence_length(layer_types[idx])), None)
        without_kv = [idx for idx in without_kv if idx != keeping]
    for layer_idx in without_kv:
        layer_types[layer_idx] = "dummy"
        per_layer_kwargs[layer_idx] = {}
    for layer_idx, layer_kwargs in enumerate(per_layer_kwargs):
        if "sliding_window" in layer_kwargs and layer_kwargs["sliding_window"] is None:
            layer_types[layer_idx] = "full_attention"
            per_layer_kwargs[layer_idx] = {}
    return layer_types, per_layer_kwargs


def _tracks_sequence_length(layer_type: str) -> bool:
    """Whether upstream's cache layer of this type counts tokens (`Cache.get_seq_length` reads the first one)."""
    layer_cls = DYNAMIC_LAYER_TYPE_MAPPING.get(layer_type)
    return layer_cls is not None and issubclass(layer_cls, CacheLayerMixin)


@dataclass(frozen=True)
class LayerKVCacheSize:
    """KV-cache size of one layer.

    `bytes_per_token` is what each cached token costs (keys and values of all its KV heads); `window` is the layer's
    sliding window or chunk size, `None` when it attends to the whole sequence.
    """

    layer_idx: int
    num_key_value_heads: int
    head_dim: int
    bytes_per_token: int
    window: int | None

    @property
    def max_tokens(self) -> int | None:
        """The most tokens the layer keeps between steps: a query sees itself and the `window - 1` tokens before it,
        so a windowed layer needs `window - 1` tokens of the past (`None`: all of them)."""
        return None if self.window is None else self.window - 1

    def bytes_for(self, num_tokens: int, batch_size: int = 1) -> int:
        """Bytes this layer holds after `num_tokens` tokens in a `DynamicCache` (the theoretical minimum)."""
        kept = num_tokens if self.max_tokens is None else min(num_tokens, self.max_tokens)
        return batch_size * kept * self.bytes_per_token

    def static_bytes(self, max_cache_len: int, batch_size: int = 1) -> int:
        """Bytes a `StaticCache` of `max_cache_len` allocates for this layer: a windowed layer writes the incoming
        token next to its `window - 1` past ones, so it holds `window` slots."""
        slots = max_cache_len if self.window is None else min(max_cache_len, self.window)
        return batch_size * slots * self.bytes_per_token


def kv_cache_bytes(config: PreTrainedConfig, dtype: torch.dtype = torch.bfloat16) -> list[LayerKVCacheSize]:
    """Per-layer KV-cache sizes for `config`, homogeneous or not: keys and values of every layer that holds KV.

    Layers without KV (attention skipped, or a cache type without per-token KV: `"dummy"`, and the fixed-size
    conv / recurrent states of `"linear_attention"` Mamba layers) are left out. Windows come from the cache layer
    types, as the caches get them. Sum `size.bytes_for(n)` over the result for the bytes held after `n` tokens
    (`kv_cache_total_bytes`).
    """
    from .. import cache_utils

    element_size = torch.empty((), dtype=dtype).element_size()
    without_kv = set(layers_without_kv_cache(config))
    layer_types, per_layer_kwargs = cache_utils.get_layer_types_and_kwargs(config)
    sizes = []
    for layer_idx, layer_config in enumerate(config.per_layer_config):
        # Per-token KV lives in the `CacheLayerMixin` classes; `DummyLayer` and the linear-attention layers are not.
        if layer_idx in without_kv or not _tracks_sequence_length(layer_types[layer_idx]):
            continue
        head_dim = (
            getattr(layer_config, "head_dim", None) or layer_config.hidden_size // layer_config.num_attention_heads
        )
        kv_heads = getattr(layer_config, "num_key_value_heads", None) or layer_config.num_attention_heads
        sizes.append(
            LayerKVCacheSize(
                layer_idx=layer_idx,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                bytes_per_token=2 * kv_heads * head_dim * element_size,
                window=per_layer_kwargs[layer_idx].get("sliding_window"),
            )
        )
    return sizes


def kv_cache_total_bytes(
    config: PreTrainedConfig, num_tokens: int, dtype: torch.dtype = torch.bfloat16, batch_size: int = 1
) -> int:
    """Bytes the KV cache of `config` holds after `num_tokens` tokens (windowed layers keep only their window)."""
    return sum(size.bytes_for(num_tokens, batch_size) for size in kv_cache_bytes(config, dtype))


# `torch.export` flattens a `DynamicCache` into its layers' tensors, leaving out layers without data, and refills layers
# from index 0 when it unflattens (`integrations/executorch.py`, transformers 5.23): a layer whose attention is skipped,
# placed before a layer that holds KV, would receive that layer's keys. The layout (part of the exported spec) marks
# such layers, and unflattening puts an empty `DummyLayer` back in their place.
DUMMY_LAYOUT_ENTRY = "dummy"


def export_layout_with_dummy_layers(cache, layout: list) -> list:
    """Upstream's export layout of `cache` (one window or `None` per layer), with every `DummyLayer` that precedes
    another kind of layer marked `DUMMY_LAYOUT_ENTRY`, whether or not the cache holds data yet (export traces with
    the cache rebuilt from this layout). Trailing ones keep upstream's entry, which already restores them in place (as
    empty layers), so a cache without such layers (every homogeneous one) keeps exactly upstream's layout."""
    from ..cache_utils import DummyLayer

    is_dummy = [isinstance(layer, DummyLayer) for layer in cache.layers]
    return [
        DUMMY_LAYOUT_ENTRY if is_dummy[layer_idx] and not all(is_dummy[layer_idx:]) else entry
        for layer_idx, entry in enumerate(layout)
    ]


def unflatten_with_dummy_layers(values: list, context: list, unflatten):
    """`unflatten` (upstream's) for the layers holding data, with a `DummyLayer` back at each marked index."""
    from ..cache_utils import DummyLayer

    dictionary_keys, layout = context
    dummy_indices = [layer_idx for layer_idx, entry in enumerate(layout) if entry == DUMMY_LAYOUT_ENTRY]
    if not dummy_indices:
        return unflatten(values, context)
    cache = unflatten(values, [dictionary_keys, [entry for entry in layout if entry != DUMMY_LAYOUT_ENTRY]])
    for layer_idx in dummy_indices:
        cache.layers.insert(layer_idx, DummyLayer())
    return cache
