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
"""Per-layer attention masks: each layer attends with its own window or chunk size.

Stock base models build their masks once, for the whole model, from the global `sliding_window` (Mistral) or from
`layer_types` with one window (Qwen2, GPT-OSS, ...). When the window or chunk size is set per layer, that cannot be
right for every layer. So for such a model:

- a forward pre-hook on the base model takes the caller's 2D padding mask (or `None`) out of `attention_mask`, puts a
  4D placeholder in its place (the stock mask functions return a 4D mask as given, so the model-level code builds
  nothing), and hands the padding mask to the layers in a `PerLayerMasks` passed through the layers' keyword
  arguments;
- a forward pre-hook on every decoder layer replaces the placeholder with the mask of the layer's own setting, built by
  upstream's mask functions the first time a layer with that setting runs in this forward, and reused by the others.

Masks fail closed. The placeholder is an empty 4D tensor, which no attention can compute with (it broadcasts to no
query/key shape), never a mask that lets a layer attend to everything; and a layer that should get its own mask and
receives the placeholder without `PerLayerMasks` (a base model whose forward does not pass its keyword arguments on to
its layers) raises an error naming the layer.

So each distinct mask is built once per forward, sized against a cache layer of its own kind (windows and chunks come
from the same `get_layer_types_and_kwargs` as the cache layers). Nothing is stored on modules between forwards, which
keeps `torch.compile` graphs free of Python state. A 4D mask given by the caller is used as given; a mapping of masks
prepared by the caller (continuous batching prepares one per page group) gives each layer the mask of its setting,
keyed by `mask_key` (`"sliding_attention_128"`), or else the mask of its kind (`"sliding_attention"`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import masking_utils
from ..configuration_utils import PreTrainedConfig
from .configuration_utils import HeterogeneousConfigError, layer_config


__all__ = [
    "MASK_ATTRIBUTES",
    "MaskSetting",
    "MissingLayerMaskError",
    "PerLayerMasks",
    "check_mask_overrides",
    "has_per_layer_masks",
    "layer_mask_settings",
    "mask_attributes_handled",
    "mask_key",
]

# Per-layer attributes that change a layer's attention mask.
MASK_ATTRIBUTES = frozenset({"sliding_window", "attention_chunk_size"})

# The keyword argument that carries `PerLayerMasks` from the base model through its forward to the decoder layers.
MASKS_KWARG = "heterogeneous_masks"


class MissingLayerMaskError(HeterogeneousConfigError):
    """A layer that attends with its own mask did not receive it; computing with the placeholder would be wrong."""


# Cache layer types that get a mask, and the upstream function that builds it (looked up at call time).
_MASK_FUNCTION_NAMES = {
    "full_attention": "create_causal_mask",
    "sliding_attention": "create_sliding_window_causal_mask",
    "chunked_attention": "create_chunked_causal_mask",
}


def has_per_layer_masks(config: PreTrainedConfig) -> bool:
    """Whether some layer of `config` has its own window or chunk size."""
    return bool(config.is_heterogeneous and MASK_ATTRIBUTES.intersection(config.per_layer_attributes))


@dataclass(frozen=True)
class MaskSetting:
    """What a layer's mask depends on: its cache layer type and window (or chunk) size. Layers with equal settings
    share one mask per forward."""

    kind: str
    size: int | None = None


def mask_key(setting: MaskSetting) -> str:
    """The key of the mask of `setting` in a mapping of masks prepared per window: its kind, followed by its size for a
    windowed kind (`"sliding_attention_128"`)."""
    return setting.kind if setting.size is None else f"{setting.kind}_{setting.size}"


# A key of a mapping of prepared masks: a kind with a mask function, with or without a size (`mask_key`).
_MASK_KEY = re.compile(rf"({'|'.join(_MASK_FUNCTION_NAMES)})(_\d+)?")


def layer_mask_settings(config: PreTrainedConfig) -> list[MaskSetting | None]:
    """The mask setting of every layer; `None` for a layer that attends to nothing (attention skipped).

    Read from the cache layer types (`cache_utils.get_layer_types_and_kwargs`), so that a layer's mask and its cache
    layer always agree on its window.

    Raises:
        HeterogeneousConfigError: a layer's cache type has no mask function here (e.g. linear attention).
    """
    from .. import cache_utils

    layer_types, per_layer_kwargs = cache_utils.get_layer_types_and_kwargs(config)
    settings = []
    for layer_idx, (layer_type, layer_kwargs) in enumerate(zip(layer_types, per_layer_kwargs)):
        if layer_type == "dummy":
            settings.append(None)
        elif layer_type in _MASK_FUNCTION_NAMES:
            settings.append(MaskSetting(layer_type, layer_kwargs.get("sliding_window")))
        else:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: per-layer {sorted(MASK_ATTRIBUTES)} need a mask for every layer, but layer type "
                f"{layer_type!r} has none; supported: {sorted(_MASK_FUNCTION_NAMES)}."
            )
    return settings


def mask_attributes_handled(config: PreTrainedConfig, model_cls_has_base_model: bool) -> frozenset[str]:
    """The per-layer mask attributes that the masks built here honour for `config`: those its config class declares
    (the architecture's attention knows windows, e.g. passes them to flash attention), when the spec names the base
    model that builds masks."""
    if not model_cls_has_base_model or not has_per_layer_masks(config):
        return frozenset()
    declared = {field.name for field in dataclasses.fields(type(config))}
    return MASK_ATTRIBUTES.intersection(declared, config.per_layer_attributes)


def check_mask_overrides(config: PreTrainedConfig, handled: frozenset[str]) -> None:
    """Checks that every per-layer window or chunk size changes that layer's mask and cache as asked.

    Raises:
        HeterogeneousConfigError: e.g. a window on a layer that `layer_types` makes a full-attention layer.
    """
    if not handled:
        return
    settings = layer_mask_settings(config)
    for layer_idx, overrides in config._heterogeneity_spec.per_layer_overrides.items():
        for name in sorted(handled.intersection(overrides)):
            value, setting = overrides[name], settings[layer_idx]
            if setting is None:
                continue  # the layer attends to nothing
            expected_kind = "full_attention" if value is None else _KIND_OF_ATTRIBUTE[name]
            if setting != MaskSetting(expected_kind, value):
                layer_types = config._getattr_without_heterogeneous_validation("layer_types", None)
                raise HeterogeneousConfigError(
                    f"Layer {layer_idx}: `{name}`={value!r} would be ignored: the layer attends as "
                    f"{setting.kind!r}{'' if setting.size is None else f' of size {setting.size}'}"
                    + (f" (config.layer_types[{layer_idx}]={layer_types[layer_idx]!r})." if layer_types else ".")
                )


_KIND_OF_ATTRIBUTE = {"sliding_window": "sliding_attention", "attention_chunk_size": "chunked_attention"}


@dataclass(frozen=True)
class _LayerMask:
    """Attached to a decoder layer: its setting, and a config holding its window for upstream's mask functions."""

    setting: MaskSetting
    config: PreTrainedConfig
    layer_idx: int


class PerLayerMasks:
    """The padding mask of one forward, and the masks built from it so far (one per distinct setting); or masks
    prepared by the caller (`by_kind`, as continuous batching gives them, one per page group: `{"full_attention": ...,
    "sliding_attention": ...}`, or with several windows `{"sliding_attention_8": ..., "sliding_attention_128": ...}`),
    each layer taking that of its setting (`mask_key`), or else that of its kind."""

    def __init__(self, attention_mask: torch.Tensor | None, by_kind: Mapping[str, Any] | None = None) -> None:
        self.attention_mask = attention_mask
        self.by_kind = by_kind
        self.built: dict[MaskSetting, Any] = {}

    def for_layer(
        self,
        layer_mask: _LayerMask,
        hidden_states: torch.Tensor,
        past_key_values: Any,
        position_ids: torch.Tensor | None,
    ) -> Any:
        setting = layer_mask.setting
        if self.by_kind is not None:
            for key in (mask_key(setting), setting.kind):
                if key in self.by_kind:
                    return self.by_kind[key]
            raise HeterogeneousConfigError(
                f"Layer {layer_mask.layer_idx}: the attention mask mapping has no {mask_key(setting)!r} or "
                f"{setting.kind!r} mask (it has {sorted(self.by_kind)})."
            )
        if setting not in self.built:
            create_mask = getattr(masking_utils, _MASK_FUNCTION_NAMES[setting.kind])
            self.built[setting] = create_mask(
                config=layer_mask.config,
                inputs_embeds=hidden_states,
                attention_mask=self.attention_mask,
                past_key_values=past_key_values,
                position_ids=position_ids,
                layer_idx=layer_mask.layer_idx,
            )
        return self.built[setting]


def attach_per_layer_masks(base_model: nn.Module, layers: nn.ModuleList, config: PreTrainedConfig) -> None:
    """Makes every layer of `base_model` attend with its own mask (see the module docstring)."""
    settings = layer_mask_settings(config)
    for layer_idx, (layer, setting) in enumerate(zip(layers, settings)):
        if setting is not None:
            layer._heterogeneity_mask = _LayerMask(setting, layer_config(config, layer_idx), layer_idx)
        position = _argument_position(type(layer).forward, "attention_mask")
        layer.register_forward_pre_hook(functools.partial(_use_layer_mask, position=position), with_kwargs=True)
    position = _argument_position(type(base_model).forward, "attention_mask")
    base_model.register_forward_pre_hook(_defer_masks_to_layers(position), with_kwargs=True)


def _argument_position(function: Callable, name: str) -> int | None:
    parameters = list(inspect.signature(function).parameters)
    return parameters.index(name) - 1 if name in parameters else None  # positions exclude `self`


def _defer_masks_to_layers(position: int | None) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        positional = "attention_mask" not in kwargs and position is not None and position < len(args)
        attention_mask = args[position] if positional else kwargs.get("attention_mask")
        if isinstance(attention_mask, Mapping) and all(_MASK_KEY.fullmatch(key) for key in attention_mask):
            masks = PerLayerMasks(None, by_kind=attention_mask)  # prepared per page group (continuous batching)
        elif attention_mask is not None and not (
            isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2
        ):
            return None  # prepared by the caller (4D mask, BlockMask, other mapping): every layer uses it as given
        else:
            masks = PerLayerMasks(attention_mask)
        placeholder = _deferred_mask_placeholder()
        if positional:
            args = (*args[:position], placeholder, *args[position + 1 :])
        else:
            kwargs["attention_mask"] = placeholder
        kwargs[MASKS_KWARG] = masks
        return args, kwargs

    return hook


def _deferred_mask_placeholder() -> torch.Tensor:
    """What the base model gets as its attention mask while the layers build theirs: empty, so that a layer computing
    with it fails instead of attending to everything, and so that the layer hook tells it from any caller's mask (no
    real 4D mask is empty)."""
    return torch.empty((0, 0, 0, 0), dtype=torch.bool)


def _is_placeholder(mask: Any) -> bool:
    return isinstance(mask, torch.Tensor) and mask.numel() == 0 and mask.ndim == 4


def _use_layer_mask(layer: nn.Module, args: tuple, kwargs: dict, position: int | None) -> tuple[tuple, dict] | None:
    masks = kwargs.pop(MASKS_KWARG, None)
    layer_mask = getattr(layer, "_heterogeneity_mask", None)
    if layer_mask is None:
        return args, kwargs  # the layer attends to nothing (attention skipped)
    positional = "attention_mask" not in kwargs and position is not None and position < len(args)
    given = args[position] if positional else kwargs.get("attention_mask")
    if masks is None:
        if _is_placeholder(given):
            raise MissingLayerMaskError(
                f"Layer {layer_mask.layer_idx} ({type(layer).__name__}) attends with its own "
                f"{layer_mask.setting.kind!r} mask (size {layer_mask.setting.size}), but its per-layer masks did not "
                f"reach it: the base model's forward must pass its keyword arguments (`{MASKS_KWARG}`) on to its "
                "decoder layers. The layer was not run with the placeholder mask."
            )
        return args, kwargs  # called on its own, with the caller's own mask
    hidden_states = args[0] if args else kwargs["hidden_states"]
    mask = masks.for_layer(layer_mask, hidden_states, kwargs.get("past_key_values"), kwargs.get("position_ids"))
    if positional:
        args = (*args[:position], mask, *args[position + 1 :])
    else:
        kwargs["attention_mask"] = mask
    return args, kwargs
