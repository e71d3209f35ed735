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
"""The page plan of continuous batching for a heterogeneous model: which layers each page group holds, in which shape.

One group of full-attention layers and one group per distinct window (as vLLM groups its KV caches:
`vllm/v1/core/kv_cache_coordinator.py`); each layer that holds KV pages keys and values of its own KV heads and
head_dim. Planned from the config alone (`plan_serving`), so the server can refuse a model before it builds a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..configuration_utils import PreTrainedConfig
from ..generation.continuous_batching.cache_allocators import FULL_ATTENTION, SLIDING_ATTENTION
from .cache_utils import kv_cache_bytes
from .configuration_utils import HeterogeneousConfigError
from .masking_utils import MaskSetting, mask_key


__all__ = ["LayerPages", "PageGroup", "ServingPlan", "UnservableLayerError", "plan_serving"]


class UnservableLayerError(HeterogeneousConfigError):
    """A layer that continuous batching cannot page; the message names the layer and why."""


@dataclass(frozen=True)
class LayerPages:
    """The page shape of one layer that holds KV: per token, keys and values of `num_key_value_heads` heads (those of
    one tensor-parallel rank) of `head_dim` each."""

    layer_idx: int
    num_key_value_heads: int
    head_dim: int

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        return 2 * self.num_key_value_heads * self.head_dim * dtype.itemsize


@dataclass(frozen=True)
class PageGroup:
    """Layers paged by one allocator: one kind of attention and one window (`None`: full attention). `name` keys the
    group everywhere continuous batching keys per-group data (key lengths, masks, indices)."""

    name: str
    window: int | None
    layers: tuple[LayerPages, ...]

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        """Cache bytes one token takes in this group: its keys and values in every layer of the group."""
        return sum(layer.bytes_per_token(dtype) for layer in self.layers)


@dataclass(frozen=True)
class ServingPlan:
    """The page groups of a model, in the order their first layer appears (the allocators' `index`)."""

    groups: dict[str, PageGroup]

    @property
    def layers(self) -> list[LayerPages]:
        return [layer for group in self.groups.values() for layer in group.layers]

    def bytes_per_model_block(self, dtype: torch.dtype, page_size: int) -> int:
        """A whole-model block (what `ContinuousBatchingConfig.num_blocks` counts): `page_size` tokens of every layer
        that holds KV, each of its own size. Upstream multiplies one layer's page by `num_hidden_layers`."""
        return page_size * sum(group.bytes_per_token(dtype) for group in self.groups.values())


# The layer types (`cache_utils.get_layer_types_and_kwargs`) that upstream's continuous batching has an allocator for.
_PAGED_LAYER_TYPES = {"full_attention": FULL_ATTENTION, "sliding_attention": SLIDING_ATTENTION}


def plan_serving(config: PreTrainedConfig, tp_size: int = 1, kv_heads_sharded: bool = False) -> ServingPlan:
    """The per-layer page plan of `config` for continuous batching: one group of full-attention layers and one group
    per distinct window.

    Groups keep upstream's names (`"full_attention"`, `"sliding_attention"`) when the model has at most one window, so
    that the per-group masks continuous batching passes to the model are keyed as stock models read them
    (`config.layer_types`); with several windows, each window's group is named by `masking_utils.mask_key`
    (`"sliding_attention_128"`), which the per-layer masks of such a model look up.

    Args:
        config: the model's text config, homogeneous or not.
        tp_size: the tensor-parallel size; with `kv_heads_sharded` each rank holds `num_key_value_heads // tp_size`
            heads of every layer.
        kv_heads_sharded: whether the TP plan shards the K and V projections (upstream's
            `DistributedHelper.are_kv_heads_tp_ed`).

    Raises:
        UnservableLayerError: a layer type without an allocator, KV heads that the TP size does not divide, or no
            layer holding KV at all.
    """
    from .. import cache_utils

    layer_types, _ = cache_utils.get_layer_types_and_kwargs(config)
    # Upstream's continuous batching also reads `config.layer_types` itself (`group_layers_by_attn_type`), so a type
    # there that it has no allocator for (Llama4's "chunked_attention", NemotronH's "moe" and Mamba
    # "linear_attention") stops it even for homogeneous models; a skipped attention's "dummy" only here needs no pages.
    declared = getattr(config, "layer_types", None) or [None] * len(layer_types)
    for layer_idx, (layer_type, declared_type) in enumerate(zip(layer_types, declared)):
        for name, value in (("config.layer_types", declared_type), ("its cache layer type", layer_type)):
            if value not in _PAGED_LAYER_TYPES and value not in (None, "dummy"):
                raise UnservableLayerError(
                    f"Layer {layer_idx}: continuous batching cannot serve a {value!r} layer ({name}): transformers' "
                    f"paged cache has allocators for {sorted(_PAGED_LAYER_TYPES)} only. Use `generate()` instead."
                )
    # `kv_cache_bytes` holds each layer's KV heads, head_dim and window, and leaves out the layers without KV.
    layers_by_window: dict[int | None, list[LayerPages]] = {}
    for size in kv_cache_bytes(config):
        kv_heads = size.num_key_value_heads
        if tp_size > 1 and kv_heads_sharded:
            if kv_heads % tp_size:
                raise UnservableLayerError(
                    f"Layer {size.layer_idx}: `num_key_value_heads`={kv_heads} is not divisible by the tensor-parallel "
                    f"size {tp_size}; every layer's KV heads must be, to shard its KV cache."
                )
            kv_heads //= tp_size
        window = size.window if _PAGED_LAYER_TYPES[layer_types[size.layer_idx]] == SLIDING_ATTENTION else None
        layers_by_window.setdefault(window, []).append(LayerPages(size.layer_idx, kv_heads, size.head_dim))
    if not layers_by_window:
        raise UnservableLayerError(
            "No layer holds a KV cache (every attention is skipped or linear): nothing to page."
        )
    several_windows = len(set(layers_by_window) - {None}) > 1
    groups = {}
    for window, layers in layers_by_window.items():
        if window is None:
            name = FULL_ATTENTION
        else:
            name = mask_key(MaskSetting(SLIDING_ATTENTION, window)) if several_windows else SLIDING_ATTENTION
        groups[name] = PageGroup(name, window, tuple(layers))
    return ServingPlan(groups)
