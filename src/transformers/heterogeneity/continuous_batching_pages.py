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
"""Where a page group's pages live and how one step addresses them (see `continuous_batching.py`).

- `PerLayerFullAttentionAllocator` / `PerLayerSlidingAttentionAllocator`: upstream's allocators of one page group,
  whose blocks hold a page of every layer of the group, each of that layer's own shape.
- `PageGroupsIOs`: upstream's batch IO tensors with one row of key lengths and one attention mask per page group
  (upstream's have two rows, full and sliding, and take the window of the sliding one from the config).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..generation.continuous_batching import input_outputs
from ..generation.continuous_batching.cache_allocators import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    CachePool,
    FullAttentionCacheAllocator,
    SlidingAttentionCacheAllocator,
)
from ..generation.continuous_batching.utils import build_attention_mask
from .continuous_batching_plan import PageGroup


__all__ = [
    "PageGroupsIOs",
    "PerLayerFullAttentionAllocator",
    "PerLayerSlidingAttentionAllocator",
    "per_layer_allocator",
]


class _PerLayerPagesMixin:
    """Pages of each layer's own shape inside one block, for an upstream allocator class.

    Upstream's allocators (5.23) give every layer of a group the same page and address a token by one row index,
    `block_id * block_physical_stride + slot`, into a per-layer view shifted by the layer's page. Here a block is one
    unit holding a page of every layer of the group (each layer's K page, then its V page), so `block_physical_stride`
    is `2 * page_size` (the K and V rows of one page) and the index math of the upstream classes (reads, writes, ring
    buffer, trash and sentinel indices) is kept. A layer whose token row (`num_key_value_heads * head_dim` elements)
    divides the block reads and writes a flat view of rows with upstream's `index_select` / `index_copy_`, at row
    `block_id * rows_per_block + slot`; another addresses (block, slot) of its page view. The index tensors of a step
    are the same for every layer of the group, so each is translated once per step and row layout.
    """

    supports_block_table = False  # `flash_attn_with_kvcache` takes one page shape for all layers
    reads_before_writing: bool

    def __init__(
        self, group: PageGroup, index: int, cache_dtype: torch.dtype, page_size: int, allow_block_sharing: bool
    ) -> None:
        self.layer_type = group.name  # the key of this group's key lengths and mask in a step's arguments
        self.cache_dtype = cache_dtype
        self.layer_pages = {layer.layer_idx: layer for layer in group.layers}
        # Element offsets of each layer's K page inside a block; its V page follows it.
        self._page_offsets: dict[int, int] = {}
        block_elements = 0
        for layer in group.layers:
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
        self._translated: dict[tuple[str, int | None], tuple[torch.Tensor, Any]] = {}

    def register_cache_tensor(
        self, bytes_per_sector: int, non_trash_bytes: int, cache_tensor: torch.Tensor, pool: CachePool
    ) -> None:
        """Makes each layer's K and V views over the cache bytes, never copies: pages
        `[num_blocks, page_size, num_key_value_heads, head_dim]` with the block stride of the whole group, and where the
        layer's row divides the block, rows `[num_rows, num_key_value_heads, head_dim]`."""
        self._copy_view = cache_tensor.view(-1, self.bytes_per_block)
        total_blocks = (non_trash_bytes + 2 * bytes_per_sector) // self.bytes_per_block
        typed = cache_tensor.view(self.cache_dtype)
        block_stride = self.bytes_per_block // self.cache_dtype.itemsize
        self._page_views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._access: dict[int, tuple[torch.Tensor, torch.Tensor, int | None]] = {}
        for layer_idx, layer in self.layer_pages.items():
            row = layer.num_key_value_heads * layer.head_dim
            offsets = (self._page_offsets[layer_idx], self._page_offsets[layer_idx] + self.tokens_per_page * row)
            pages = (total_blocks, self.tokens_per_page, layer.num_key_value_heads, layer.head_dim)
            keys, values = (typed.as_strided(pages, (block_stride, row, layer.head_dim, 1), o) for o in offsets)
            self._page_views[layer_idx] = (keys, values)
            if block_stride % row:
                self._access[layer_idx] = (keys, values, None)
                continue
            rows_per_block = block_stride // row
            rows = ((total_blocks - 1) * rows_per_block + self.tokens_per_page, *pages[2:])
            keys, values = (typed.as_strided(rows, (row, layer.head_dim, 1), o) for o in offsets)
            self._access[layer_idx] = (keys, values, rows_per_block)
        self._after_cache_tensor_init(non_trash_bytes, bytes_per_sector, cache_tensor, pool)

    def page_views(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The K and V pages of a layer, `[num_blocks, page_size, num_key_value_heads, head_dim]` each (trash sectors
        included), as views of the cache tensor."""
        return self._page_views[layer_idx]

    def _translate(self, kind: str, index: torch.Tensor, rows_per_block: int | None) -> Any:
        """Row indices of the upstream scheme as rows of a layer's row view (`rows_per_block`), or as (block, slot) of
        its page view (`None`); once per index tensor and layout: a step passes the same tensor to every layer of the
        group (a new one each step), and holding it here keeps its identity from being reused. Within a block, K rows
        come first: the allocators' indices point at K rows."""
        translated = self._translated.get((kind, rows_per_block))
        if translated is None or translated[0] is not index:
            blocks = torch.div(index, self.block_physical_stride, rounding_mode="floor")
            if rows_per_block is None:
                at = (blocks, index % self.block_physical_stride)
            else:  # block * rows_per_block + slot, with slot = index - block * stride
                at = index + blocks * (rows_per_block - self.block_physical_stride)
            translated = self._translated[(kind, rows_per_block)] = (index, at)
        return translated[1]

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
        keys, values, rows_per_block = self._access[layer_idx]
        write_at = self._translate("write", write_index, rows_per_block)
        if read_index.numel() == 0:
            _write(keys, write_at, key_states)
            _write(values, write_at, value_states)
            return key_states, value_states
        read_at = self._translate("read", read_index, rows_per_block)
        if self.reads_before_writing:
            new_slots = (read_index == self.sentinel_index)[:, None, None]
            all_keys = _read(keys, read_at).masked_scatter_(new_slots, key_states)
            all_values = _read(values, read_at).masked_scatter_(new_slots, value_states)
            _write(keys, write_at, key_states)
            _write(values, write_at, value_states)
            return all_keys, all_values
        _write(keys, write_at, key_states)
        _write(values, write_at, value_states)
        return _read(keys, read_at), _read(values, read_at)

    def get_cache_for_block_table(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("Per-layer pages have no block-table view (the decode fast path is off).")

    def fill_block_table(
        self, request_id: str, past_length: int, query_length: int, block_table: torch.Tensor
    ) -> None:
        raise NotImplementedError("Per-layer pages have no block-table view (the decode fast path is off).")


def _write(view: torch.Tensor, at: Any, states: torch.Tensor) -> None:
    """`states` into a layer's view at the translated indices `at` (rows, or (block, slot))."""
    if isinstance(at, tuple):
        view.index_put_(at, states)
    else:
        view.index_copy_(0, at, states)


def _read(view: torch.Tensor, at: Any) -> torch.Tensor:
    return view[at] if isinstance(at, tuple) else torch.index_select(view, 0, at)


class PerLayerFullAttentionAllocator(_PerLayerPagesMixin, FullAttentionCacheAllocator):
    """Upstream's full-attention allocator with pages of each layer's own shape."""

    reads_before_writing = False


class PerLayerSlidingAttentionAllocator(_PerLayerPagesMixin, SlidingAttentionCacheAllocator):
    """Upstream's sliding-window allocator (a ring buffer of the window) with pages of each layer's own shape."""

    reads_before_writing = True

    def __init__(self, group: PageGroup, **kwargs: Any) -> None:
        self.sliding_window = group.window
        super().__init__(group, **kwargs)


def per_layer_allocator(
    group: PageGroup,
    *,
    index: int,
    cache_dtype: torch.dtype,
    page_size: int,
    allow_block_sharing: bool,
    **upstream_arguments: Any,
) -> _PerLayerPagesMixin:
    """The allocator of `group`, called with upstream's allocator arguments (`PagedAttentionCache.__init__`); the global
    `config` and `num_key_value_heads` among them are not read: each layer's pages come from `group`."""
    allocator_cls = PerLayerFullAttentionAllocator if group.window is None else PerLayerSlidingAttentionAllocator
    return allocator_cls(
        group, index=index, cache_dtype=cache_dtype, page_size=page_size, allow_block_sharing=allow_block_sharing
    )


# Upstream's class: `activation.patch_continuous_batching` puts `continuous_batching.batch_io` in the place of this name
# (with `functools.wraps`, so `__wrapped__` is the class), as the async IO pairs construct it by that name.
_ContinuousBatchingIOs = inspect.unwrap(input_outputs.ContinuousBatchingIOs)


class PageGroupsIOs(_ContinuousBatchingIOs):
    """Upstream's IO tensors for a per-layer cache: the key lengths (`cu_seq_lens_k`, `max_length_k`) and the
    attention mask of every page group.

    Upstream has rows for two groups (`"full_attention"`, `"sliding_attention"`) in its bulk input tensor and builds the
    sliding mask with the config's one `sliding_window`. The groups of other windows get rows of their own, after
    upstream's (so the bulk transfer to the device and the logits processors' rows, which start at `static_inputs`,
    carry them too), and masks of their own window.
    """

    def _setup_static_tensors(self, logit_processor: Any) -> None:
        allocators = self.cache.cache_allocators
        other_groups = [name for name in allocators if name not in (FULL_ATTENTION, SLIDING_ATTENTION)]
        first_row = _ContinuousBatchingIOs.static_inputs
        self.static_inputs = first_row + len(other_groups)
        super()._setup_static_tensors(logit_processor)
        self._other_windows: dict[str, int] = {}
        for row, name in enumerate(other_groups, start=first_row):
            self.cumulative_seqlens_k[name] = self._bulk_input_tensor[row, : self.max_requests_per_batch + 1]
            self.total_seqlen_k[name] = 0
            self.max_length_k[name] = 0
            self._other_windows[name] = allocators[name].sliding_window
            if self.attention_mask is not None:
                max_batch_tokens = self.cache.max_batch_tokens
                self.attention_mask[name] = torch.empty(
                    (1, 1, max_batch_tokens, self.cache.max_tokens_read + max_batch_tokens),
                    dtype=self.model_dtype,
                    device=self.device,
                    pin_memory=self._bulk_input_tensor.is_pinned(),
                )

    def prepare_batch_tensors(self, requests_in_batch: list, *args: Any, **kwargs: Any) -> None:
        """Upstream's batch preparation, then the masks of the groups it gave no window (it builds them causal)."""
        super().prepare_batch_tensors(requests_in_batch, *args, **kwargs)
        if self.attention_mask is None or not self._other_windows:
            return
        num_requests = self.num_request_in_batch
        seqlens_q = self.cumulative_seqlens_q[: num_requests + 1].tolist()
        for name, window in self._other_windows.items():
            build_attention_mask(
                attention_mask=self.attention_mask[name],
                cumulative_seqlens_q=seqlens_q,
                cumulative_seqlens_k=self.cumulative_seqlens_k[name][: num_requests + 1].tolist(),
                sliding_window=window,
            )
