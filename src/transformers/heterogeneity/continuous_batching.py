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
whose pages have each layer's own shape and window.

Upstream's `PagedAttentionCache` (transformers 5.23, `generation/continuous_batching/cache.py`) sizes every page from
one global `num_key_value_heads` and `head_dim`, groups layers into at most two page groups (full attention, and
sliding attention with the global `sliding_window`), and on a heterogeneous config raises
`AmbiguousGlobalPerLayerAttributeError` at those reads. Here, as vLLM does with its KV-cache groups (one group per
kind of attention and window, each with its own manager, a request scheduled only when every group has the blocks it
needs: `vllm/v1/core/kv_cache_coordinator.py`, `single_type_kv_cache_manager.py`):

- every distinct window is a page group of its own, and full-attention layers are one more (`plan_serving`,
  `continuous_batching_plan.py`); a group
  is one upstream allocator (`cache_allocators/`), so upstream's sector pool gives each group memory as it needs it and
  admits a request only when every group has room (`PagedAttentionCache.can_store_request_tokens`);
- a block of a group holds one page per layer of the group *in that layer's shape* (its KV heads, after tensor
  parallelism, and its head_dim), one after the other; a layer reads and writes its pages through its own strided view
  (`continuous_batching_pages.py`);
- a windowed group keeps a ring buffer of its window per request (upstream's `SlidingAttentionCacheAllocator`): the
  page of a token that left the window is the one the next token overwrites, so a request never holds more than
  `ceil(window / page_size)` pages of that group;
- a layer without KV (attention skipped or linear) gets no pages;
- memory is planned from these real per-layer sizes, so a budget holds as many more tokens as the layers are smaller.

`HeterogeneousPagedAttentionCache` is upstream's cache class: its `__init__` is upstream's, which builds the groups,
allocators and memory plan through three functions of upstream's `cache.py` (`group_layers_by_attn_type`,
`ATTN_TYPE_TO_ALLOCATOR`, `PagedAttentionMemoryHandler`) that `activation.patch_paged_cache_groups` routes here for a
`ServingConfig`, the per-layer view of the model's config (`page_groups`, `page_group_allocator`, `memory_handler`).

Refused, with an error naming the layer: layer types upstream's continuous batching has no allocator for (chunked
attention, Mamba), and with tensor parallelism, KV heads that the TP size does not divide. The decode fast path
(`flash_attn_with_kvcache` on a block table) is not used: it needs one page shape for all layers of a group.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch

from ..configuration_utils import PreTrainedConfig
from ..generation.configuration_utils import ContinuousBatchingConfig
from ..generation.continuous_batching.cache import PagedAttentionCache
from ..generation.continuous_batching.cache_allocators import CacheAllocator
from ..generation.continuous_batching.distributed import DistributedHelper
from ..utils import logging
from .continuous_batching_plan import ServingPlan, UnservableLayerError, plan_serving
from .supported_models import get_config_spec


logger = logging.get_logger(__name__)

__all__ = [
    "HeterogeneousPagedAttentionCache",
    "ServingConfig",
    "check_servable",
    "continuous_batching_refusal",
    "make_paged_attention_cache",
    "processor_config",
    "serving_inputs",
]


class ServingConfig:
    """The model's config as the continuous-batching code reads it, with its page plan (`plan`).

    Per-layer attributes answer with one value that is right for each of upstream's uses: the window of a model with
    one window (upstream's mask of the `"sliding_attention"` group), the largest KV heads, heads and head_dim (upstream
    plans activation peaks with them; a layer's pages come from the plan). Every other attribute is the config's own,
    read live (the attention implementation changes at runtime).
    """

    def __init__(self, config: PreTrainedConfig, plan: ServingPlan) -> None:
        kv_layers = [config.per_layer_config[layer.layer_idx] for layer in plan.layers]
        windows = [group.window for group in plan.groups.values() if group.window is not None]
        self.__dict__.update(
            _config=config,
            plan=plan,
            sliding_window=max(windows, default=None),
            # Before tensor parallelism, as upstream reads it (`PagedAttentionCache` divides it by the TP size).
            num_key_value_heads=max(
                getattr(layer, "num_key_value_heads", None) or layer.num_attention_heads for layer in kv_layers
            ),
            head_dim=max(layer.head_dim for layer in plan.layers),
            num_attention_heads=max(layer.num_attention_heads for layer in kv_layers),
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_config"], name)


# The `ServingConfig` of the `HeterogeneousPagedAttentionCache` running upstream's `__init__` in this context, for the
# allocator look-up (`page_group_allocator`), which gets no config.
_serving_config_under_construction: ContextVar[ServingConfig | None] = ContextVar(
    "serving_config_under_construction", default=None
)


class HeterogeneousPagedAttentionCache(PagedAttentionCache):
    """`PagedAttentionCache` of a heterogeneous model: upstream's cache, built from the model's `ServingConfig`, with
    one allocator per page group whose pages have each layer's shape (see the module docstring)."""

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
        plan = plan_serving(config, tp_size, tp_size > 1 and distributed_helper.are_kv_heads_tp_ed())
        serving_config = ServingConfig(config, plan)
        token = _serving_config_under_construction.set(serving_config)
        try:
            super().__init__(
                serving_config,
                continuous_batching_config,
                device,
                distributed_helper,
                dtype,
                model_supports_logits_to_keep,
            )
        finally:
            _serving_config_under_construction.reset(token)
        self.bytes_per_model_block = plan.bytes_per_model_block(dtype, continuous_batching_config.page_size)
        # Upstream counts whole-model blocks of `num_hidden_layers` pages of one shape.
        self.num_blocks = self.num_sectors * self.bytes_per_sector // self.bytes_per_model_block
        logger.info(
            f"Per-layer paged cache: {self.num_sectors} sectors of {self.bytes_per_sector} bytes, groups "
            + ", ".join(f"{name}: layers {list(a.layer_pages)}" for name, a in self.cache_allocators.items())
        )

    def _infer_read_cache_limit(self) -> int | None:
        """Upstream's limit (a request reads at most its window) for models whose every layer is windowed, with
        several windows too: the largest."""
        windows = [getattr(allocator, "sliding_window", None) for allocator in self.cache_allocators.values()]
        return None if None in windows else max(windows)


def page_groups(config: Any, group_layers_by_attn_type: Callable) -> dict[str, list[int]]:
    """Upstream's `group_layers_by_attn_type(config)`; for a `ServingConfig`, the layers of each page group."""
    if not isinstance(config, ServingConfig):
        return group_layers_by_attn_type(config)
    return {name: [layer.layer_idx for layer in group.layers] for name, group in config.plan.groups.items()}


def page_group_allocator(attn_type: str, allocator_cls: type[CacheAllocator] | None) -> Callable[..., CacheAllocator]:
    """What upstream's `ATTN_TYPE_TO_ALLOCATOR[attn_type]` gives (`allocator_cls`, its class); while a per-layer cache
    runs upstream's `__init__`, the constructor of the allocator of its page group `attn_type`, which takes upstream's
    allocator arguments and reads the group from the plan.

    Raises:
        KeyError: `attn_type` is neither an upstream attention type nor a page group of the cache being built.
    """
    serving_config = _serving_config_under_construction.get()
    if serving_config is None:
        if allocator_cls is None:
            raise KeyError(attn_type)
        return allocator_cls
    from .continuous_batching_pages import per_layer_allocator

    return functools.partial(per_layer_allocator, serving_config.plan.groups[attn_type])


def memory_handler(handler_cls: type, **kwargs: Any) -> Any:
    """Upstream's `PagedAttentionMemoryHandler(**kwargs)`; for a `ServingConfig`, sized with the real whole-model
    block and, where the attention needs masks, one mask per page group (upstream counts at most two)."""
    config = kwargs["config"]
    if not isinstance(config, ServingConfig):
        return handler_cls(**kwargs)
    kwargs["bytes_per_block"] = config.plan.bytes_per_model_block(kwargs["dtype"], kwargs["cb_config"].page_size)
    handler = handler_cls(**kwargs)
    if handler.num_attention_masks:
        handler.num_attention_masks = len(config.plan.groups)
    return handler


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
) -> tuple[PreTrainedConfig | ServingConfig, ContinuousBatchingConfig]:
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
    return ServingConfig(config, plan_serving(config)), cb_config


def processor_config(cache: PagedAttentionCache, config: PreTrainedConfig) -> PreTrainedConfig | ServingConfig:
    """The config upstream's `ContinuousBatchProcessor` reads for its IO tensors and masks: the per-layer cache's
    `ServingConfig` instead of the model's, which would raise on per-layer reads such as `sliding_window`; with
    upstream's cache, the model's config unchanged."""
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


def continuous_batching_refusal(config: PreTrainedConfig) -> str | None:
    """Why continuous batching cannot serve a model of `config` (per-layer config of an architecture this package
    builds), or `None` when it can; from the config alone, before any weight is loaded."""
    config = config.get_text_config()
    if not pages_per_layer_needed(config):
        return None
    try:
        plan_serving(config)
    except UnservableLayerError as error:
        return str(error)
    return None


def batch_io(io_cls: type, **kwargs: Any) -> Any:
    """Upstream's `ContinuousBatchingIOs(**kwargs)`; for a per-layer cache, its IO tensors with every page group."""
    if not isinstance(kwargs["cache"], HeterogeneousPagedAttentionCache):
        return io_cls(**kwargs)
    from .continuous_batching_pages import PageGroupsIOs

    return PageGroupsIOs(**kwargs)
