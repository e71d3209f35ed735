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
"""A paged KV cache for continuous batching (`generate_batch`, `ContinuousBatchingManager`, `transformers serve`)
whose pages have each layer's own shape.

Upstream's `PagedAttentionCache` (transformers 5.23, `generation/continuous_batching/cache.py`) sizes every page from
one global `num_key_value_heads` and `head_dim` and takes the window of its sliding layers from the global
`sliding_window`; on a heterogeneous config those reads raise `AmbiguousGlobalPerLayerAttributeError`. Here:

- layers are grouped as upstream groups them (one allocator for full-attention layers, one for sliding-window layers,
  `cache_allocators/`), but a block of a group holds one page per layer *of that layer's shape* (its KV heads, after
  tensor parallelism, and its head_dim), laid out one after the other. A layer reads and writes its pages through its
  own strided view, indexed by (block, slot): every layer of a group shares the group's block table and indices;
- sliding layers keep only their window (upstream's ring buffer of `SlidingAttentionCacheAllocator`);
- a layer without KV (attention skipped or linear) gets no pages;
- memory is planned from these real per-layer sizes, so a budget holds as many more tokens as the layers are smaller.

Limits, each refused with an error naming the layer: sliding layers with different windows (upstream pages one window
per model), layer types upstream's continuous batching has no allocator for (chunked attention, Mamba), and, with
tensor parallelism, KV heads that the TP size does not divide. The decode fast path (`flash_attn_with_kvcache` on a
block table) is not used: it needs one page shape for all layers of a group; decoding takes the index path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from math import lcm
from typing import Any

import torch

from ..configuration_utils import PreTrainedConfig
from ..generation.configuration_utils import ContinuousBatchingConfig
from ..generation.continuous_batching.cache import PagedAttentionCache, PagedAttentionMemoryHandler
from ..generation.continuous_batching.cache_allocators import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    CacheAllocator,
    CachePool,
    FullAttentionCacheAllocator,
    SlidingAttentionCacheAllocator,
)
from ..generation.continuous_batching.distributed import DistributedHelper
from ..utils import logging
from .cache_utils import kv_cache_bytes
from .configuration_utils import HeterogeneousConfigError
from .supported_models import get_config_spec


logger = logging.get_logger(__name__)

__all__ = [
    "HeterogeneousPagedAttentionCache",
    "LayerPages",
    "ServingPlan",
    "UnservableLayerError",
    "check_servable",
    "make_paged_attention_cache",
    "plan_serving",
    "processor_config",
    "serving_inputs",
]


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
class ServingPlan:
    """Which layers each allocator pages, and the window of the sliding ones (`None`: no sliding layer)."""

    groups: dict[str, list[LayerPages]]
    sliding_window: int | None

    @property
    def layers(self) -> list[LayerPages]:
        return [layer for group in self.groups.values() for layer in group]


# The layer types (`cache_utils.get_layer_types_and_kwargs`) that upstream's continuous batching has an allocator for.
_PAGED_LAYER_TYPES = {"full_attention": FULL_ATTENTION, "sliding_attention": SLIDING_ATTENTION}


def plan_serving(config: PreTrainedConfig, tp_size: int = 1, kv_heads_sharded: bool = False) -> ServingPlan:
    """The per-layer page plan of `config` for continuous batching.

    Args:
        config: the model's text config, homogeneous or not.
        tp_size: the tensor-parallel size; with `kv_heads_sharded` each rank holds `num_key_value_heads // tp_size`
            heads of every layer.
        kv_heads_sharded: whether the TP plan shards the K and V projections (upstream's
            `DistributedHelper.are_kv_heads_tp_ed`).

    Raises:
        UnservableLayerError: a layer type without an allocator, sliding layers with different windows, KV heads that
            the TP size does not divide, or no layer holding KV at all.
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
    groups: dict[str, list[LayerPages]] = {}
    windows: dict[int, int] = {}
    # `kv_cache_bytes` holds each layer's KV heads, head_dim and window, and leaves out the layers without KV.
    for size in kv_cache_bytes(config):
        kv_heads = size.num_key_value_heads
        if tp_size > 1 and kv_heads_sharded:
            if kv_heads % tp_size:
                raise UnservableLayerError(
                    f"Layer {size.layer_idx}: `num_key_value_heads`={kv_heads} is not divisible by the tensor-parallel "
                    f"size {tp_size}; every layer's KV heads must be, to shard its KV cache."
                )
            kv_heads //= tp_size
        kind = _PAGED_LAYER_TYPES[layer_types[size.layer_idx]]
        groups.setdefault(kind, []).append(LayerPages(size.layer_idx, kv_heads, size.head_dim))
        if kind == SLIDING_ATTENTION:
            windows[size.layer_idx] = size.window
    if not groups:
        raise UnservableLayerError(
            "No layer holds a KV cache (every attention is skipped or linear): nothing to page."
        )
    if len(set(windows.values())) > 1:
        raise UnservableLayerError(
            "Layers have different sliding windows "
            f"({', '.join(f'layer {i}: {w}' for i, w in windows.items())}): continuous batching pages one window per "
            "model (transformers' `SlidingAttentionCacheAllocator`). Use `generate()`, or one window for all layers."
        )
    return ServingPlan(groups, next(iter(windows.values()), None))


class _ServingConfig:
    """The model's config as the continuous-batching code reads it: per-layer attributes answer with one value that is
    right for its use (the sliding group's window; the largest heads and head_dim, for activation peaks), and every
    other attribute is the config's own, read live (the attention implementation changes at runtime)."""

    def __init__(self, config: PreTrainedConfig, overrides: dict[str, Any]) -> None:
        self._config = config
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__["_overrides"]
        return overrides[name] if name in overrides else getattr(self.__dict__["_config"], name)


def serving_config(config: PreTrainedConfig, plan: ServingPlan) -> _ServingConfig:
    """`config` for upstream's continuous-batching code (memory planning, IO tensors, masks)."""
    layer_configs = [config.per_layer_config[layer.layer_idx] for layer in plan.layers]
    return _ServingConfig(
        config,
        {
            "sliding_window": plan.sliding_window,
            "num_key_value_heads": max(layer.num_key_value_heads for layer in plan.layers),
            "head_dim": max(layer.head_dim for layer in plan.layers),
            "num_attention_heads": max(layer_config.num_attention_heads for layer_config in layer_configs),
        },
    )


class _PerLayerPagesMixin:
    """Pages of each layer's own shape inside one block (see the module docstring), for an upstream allocator class.

    Upstream's allocators (5.23) give every layer of a group the same page and address a token by one row index,
    `block_id * block_physical_stride + slot`, into a per-layer view shifted by the layer's page. Here a block is one
    unit holding a page of every layer of the group, so `block_physical_stride` is `2 * page_size` (the K and V rows of
    one page), the index math of the upstream classes (reads, writes, ring buffer, trash and sentinel indices) is kept,
    and each layer decodes an index into (block, slot) of its own view.
    """

    supports_block_table = False  # `flash_attn_with_kvcache` takes one page shape for all layers

    def __init__(
        self,
        index: int,
        layers: list[LayerPages],
        cache_dtype: torch.dtype,
        page_size: int,
        allow_block_sharing: bool,
    ) -> None:
        self.cache_dtype = cache_dtype
        self.layer_pages = {layer.layer_idx: layer for layer in layers}
        # Element offsets of each layer's K page inside a block; its V page follows it.
        self._page_offsets: dict[int, int] = {}
        block_elements = 0
        for layer in layers:
            self._page_offsets[layer.layer_idx] = block_elements
            block_elements += 2 * page_size * layer.num_key_value_heads * layer.head_dim
        block_bytes = block_elements * cache_dtype.itemsize
        self._before_cache_tensor_init(
            index=index,
            layer_indices=list(self.layer_pages),
            tokens_per_page=page_size,
            bytes_per_page=block_bytes,
            allow_block_sharing=allow_block_sharing,
        )
        # The block is the unit of addressing (one page of every layer), so it counts as one page of `block_bytes`.
        self.pages_per_block = 1
        self.tokens_per_block = page_size
        self.block_physical_stride = self.rows_per_token * page_size
        self.bytes_per_block = block_bytes

    def register_cache_tensor(
        self, bytes_per_sector: int, non_trash_bytes: int, cache_tensor: torch.Tensor, pool: CachePool
    ) -> None:
        """Makes each layer's K and V views `[num_blocks, page_size, num_key_value_heads, head_dim]` over the cache
        bytes, with the block stride of the whole group, so a layer's pages are strided views, never copies."""
        self._copy_view = cache_tensor.view(-1, self.bytes_per_block)
        total_blocks = (non_trash_bytes + 2 * bytes_per_sector) // self.bytes_per_block
        typed = cache_tensor.view(self.cache_dtype)
        block_stride = self.bytes_per_block // self.cache_dtype.itemsize
        self._layer_views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer_idx, layer in self.layer_pages.items():
            row = layer.num_key_value_heads * layer.head_dim
            shape = (total_blocks, self.tokens_per_page, layer.num_key_value_heads, layer.head_dim)
            strides = (block_stride, row, layer.head_dim, 1)
            key_offset = self._page_offsets[layer_idx]
            self._layer_views[layer_idx] = (
                typed.as_strided(shape, strides, key_offset),
                typed.as_strided(shape, strides, key_offset + self.tokens_per_page * row),
            )
        self._after_cache_tensor_init(non_trash_bytes, bytes_per_sector, cache_tensor, pool)

    def _split(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of the upstream scheme as (block, slot) of a layer's view. Within a block, K rows come first:
        the indices the allocators compute always point at K rows."""
        return torch.div(index, self.block_physical_stride, rounding_mode="floor"), index % self.block_physical_stride

    def update(
        self,
        key_states: torch.Tensor,  # [seqlen_q, num_kv_heads, head_dim]
        value_states: torch.Tensor,
        layer_idx: int,
        read_index: torch.Tensor,  # [past + seqlen_q] (sliding: past cached tokens, then sentinels)
        write_index: torch.Tensor,  # [seqlen_q]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the new KV states and returns the KV the attention needs, as the upstream allocator of this group
        does (`full_attention.py`, `sliding_attention.py`): a full-attention layer writes, then reads its whole
        sequence; a sliding layer reads its window first (the new tokens may overwrite it in the ring) and puts the
        new states at the sentinel slots."""
        keys, values = self._layer_views[layer_idx]
        write_at = self._split(write_index)
        if read_index.numel() == 0:
            keys.index_put_(write_at, key_states)
            values.index_put_(write_at, value_states)
            return key_states, value_states
        read_at = self._split(read_index)
        if self.reads_before_writing:
            new_slots = (read_index == self.sentinel_index)[:, None, None]
            all_keys = keys[read_at].masked_scatter_(new_slots, key_states)
            all_values = values[read_at].masked_scatter_(new_slots, value_states)
            keys.index_put_(write_at, key_states)
            values.index_put_(write_at, value_states)
            return all_keys, all_values
        keys.index_put_(write_at, key_states)
        values.index_put_(write_at, value_states)
        return keys[read_at], values[read_at]

    def get_cache_for_block_table(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("Per-layer pages have no block-table view (the decode fast path is off).")

    def fill_block_table(
        self, request_id: str, past_length: int, query_length: int, block_table: torch.Tensor
    ) -> None:
        raise NotImplementedError("Per-layer pages have no block-table view (the decode fast path is off).")


class PerLayerFullAttentionAllocator(_PerLayerPagesMixin, FullAttentionCacheAllocator):
    """Upstream's full-attention allocator with pages of each layer's own shape."""

    reads_before_writing = False


class PerLayerSlidingAttentionAllocator(_PerLayerPagesMixin, SlidingAttentionCacheAllocator):
    """Upstream's sliding-window allocator (a ring buffer of the window) with pages of each layer's own shape."""

    reads_before_writing = True

    def __init__(self, *args: Any, sliding_window: int, **kwargs: Any) -> None:
        self.sliding_window = sliding_window
        super().__init__(*args, **kwargs)


class HeterogeneousPagedAttentionCache(PagedAttentionCache):
    """`PagedAttentionCache` of a heterogeneous model: the same sectors, pool, scheduling and memory planning, with
    allocators whose pages have each layer's shape (see the module docstring). Everything after construction is
    upstream's."""

    def __init__(
        self,
        config: PreTrainedConfig,
        continuous_batching_config: ContinuousBatchingConfig,
        device: torch.device | str,
        distributed_helper: DistributedHelper,
        dtype: torch.dtype = torch.float16,
        model_supports_logits_to_keep: bool = False,
    ) -> None:
        tp_size = distributed_helper.tp_size
        self.plan = plan_serving(config, tp_size, tp_size > 1 and distributed_helper.are_kv_heads_tp_ed())
        self.config = serving_config(config, self.plan)
        self.dtype = dtype
        self.device = device
        self.max_blocks_per_request = 0  # no block table: see `_PerLayerPagesMixin.supports_block_table`
        page_size = continuous_batching_config.page_size
        allocator_kwargs = {
            "cache_dtype": dtype,
            "page_size": page_size,
            "allow_block_sharing": continuous_batching_config.allow_block_sharing,
        }
        self.cache_allocators: dict[str, CacheAllocator] = {}
        self.layer_to_allocator: dict[int, CacheAllocator] = {}
        for index, (kind, layers) in enumerate(self.plan.groups.items()):
            if kind == SLIDING_ATTENTION:
                allocator = PerLayerSlidingAttentionAllocator(
                    index, layers, sliding_window=self.plan.sliding_window, **allocator_kwargs
                )
            else:
                allocator = PerLayerFullAttentionAllocator(index, layers, **allocator_kwargs)
            self.cache_allocators[kind] = allocator
            self.layer_to_allocator.update(dict.fromkeys(allocator.layer_pages, allocator))

        # Sector geometry as upstream's (`cache.py`): the smallest unit every group's block divides, 128-byte aligned.
        self.bytes_per_sector = lcm(*(allocator.bytes_per_block for allocator in self.cache_allocators.values()), 128)
        self.tokens_per_sector = max(
            self.bytes_per_sector // allocator.bytes_per_block * allocator.tokens_per_page
            for allocator in self.cache_allocators.values()
        )
        # A whole-model block (what `num_blocks` counts): `page_size` tokens of every layer that holds KV, each of its
        # own size. Upstream multiplies one layer's page by `num_hidden_layers`.
        self.bytes_per_model_block = page_size * sum(layer.bytes_per_token(dtype) for layer in self.plan.layers)
        self.max_batch_tokens, self.num_sectors = PagedAttentionMemoryHandler(
            config=self.config,
            cb_config=continuous_batching_config,
            dtype=dtype,
            bytes_per_sector=self.bytes_per_sector,
            tokens_per_sector=self.tokens_per_sector,
            bytes_per_block=self.bytes_per_model_block,
            attn_types=list(self.cache_allocators),
            model_supports_logits_to_keep=model_supports_logits_to_keep,
        ).infer_max_batch_tokens_and_num_sectors()
        if tp_size > 1:  # every rank must agree on the batch and cache sizes, as upstream does
            sizes = torch.tensor([self.max_batch_tokens, self.num_sectors], device=device, dtype=torch.int64)
            distributed_helper.tp_all_reduce_min(sizes)
            self.max_batch_tokens, self.num_sectors = (int(value) for value in sizes.tolist())
        logger.info(
            f"Per-layer paged cache: {self.num_sectors} sectors of {self.bytes_per_sector} bytes, groups "
            + ", ".join(f"{kind}: layers {list(a.layer_pages)}" for kind, a in self.cache_allocators.items())
        )

        # Two leading trash sectors, never allocated (upstream's layout).
        non_trash_bytes = self.num_sectors * self.bytes_per_sector
        self.cache_tensor = torch.zeros(non_trash_bytes + 2 * self.bytes_per_sector, dtype=torch.uint8, device=device)
        self.pool = CachePool(self.num_sectors, len(self.cache_allocators))
        for allocator in self.cache_allocators.values():
            allocator.register_cache_tensor(self.bytes_per_sector, non_trash_bytes, self.cache_tensor, self.pool)

        self.allow_block_sharing = continuous_batching_config.allow_block_sharing
        self.use_prefix_sharing = self.allow_block_sharing and all(
            allocator.use_block_sharing for allocator in self.cache_allocators.values()
        )
        self.num_blocks = non_trash_bytes // self.bytes_per_model_block
        self.read_cache_limit = self._infer_read_cache_limit()
        self.max_decode_fast_path_length = 0
        self.max_tokens_read = max(a.tokens_per_page * a.num_blocks for a in self.cache_allocators.values())


def pages_per_layer_needed(config: PreTrainedConfig) -> bool:
    """Whether continuous batching must page `config` per layer: a heterogeneous config of an architecture this
    package builds (models that read `per_layer_config` natively, and homogeneous ones, keep upstream's cache)."""
    return config.is_heterogeneous and get_config_spec(config) is not None


def make_paged_attention_cache(config: PreTrainedConfig, *args: Any, **kwargs: Any) -> PagedAttentionCache:
    """Upstream's `PagedAttentionCache(config, ...)`, or the per-layer one where `pages_per_layer_needed(config)`."""
    cache_cls = HeterogeneousPagedAttentionCache if pages_per_layer_needed(config) else PagedAttentionCache
    return cache_cls(config, *args, **kwargs)


def serving_inputs(
    config: PreTrainedConfig, cb_config: ContinuousBatchingConfig
) -> tuple[PreTrainedConfig | _ServingConfig, ContinuousBatchingConfig]:
    """What upstream's `resolve_continuous_batching_config(config, cb_config)` reads for `config`: unchanged, or for a
    per-layer config its serving view (planned here, so that a model continuous batching cannot page is refused in
    the caller's thread) and a copy of `cb_config` without the decode fast path, which per-layer pages do not have.

    Raises:
        UnservableLayerError: see `plan_serving`.
    """
    if not pages_per_layer_needed(config):
        return config, cb_config
    cb_config = copy.deepcopy(cb_config)
    cb_config.max_blocks_per_request = 0
    return serving_config(config, plan_serving(config)), cb_config


def processor_config(cache: PagedAttentionCache, config: PreTrainedConfig) -> PreTrainedConfig | _ServingConfig:
    """The config upstream's `ContinuousBatchProcessor` reads for its IO tensors and masks: the per-layer cache's
    serving config (`_ServingConfig`) instead of the model's, which would raise on per-layer reads such as
    `sliding_window`; with upstream's cache, the model's config unchanged."""
    return cache.config if isinstance(cache, HeterogeneousPagedAttentionCache) else config


def check_servable(manager: Any) -> None:
    """Plans the per-layer pages of a `ContinuousBatchingManager`'s model with its tensor-parallel size, in the
    caller's thread, so that a layer continuous batching cannot page is refused when the manager is made: upstream
    builds the cache in its generation thread, where an error only fails the requests (logged, empty generations).

    Raises:
        UnservableLayerError: see `plan_serving`.
    """
    config = manager.model.config.get_text_config()
    if not pages_per_layer_needed(config):
        return
    helper = manager.distributed_helper
    plan_serving(config, helper.tp_size, helper.tp_size > 1 and helper.are_kv_heads_tp_ed())
