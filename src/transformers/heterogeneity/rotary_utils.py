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
"""Rotary embeddings of layers whose own config changes what the model's rotary embedding computes.

Stock base models compute one `(cos, sin)` from the global config and hand it to every layer. A layer with another
`head_dim` (or other rope parameters) needs its own: it gets a rotary embedding built from its own config, and a
forward pre-hook recomputes `position_embeddings` from `position_ids`. The rotary buffers are not persistent, so the
state dict is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration_utils import PreTrainedConfig
from .configuration_utils import make_layer_config, stop_recording_reads


__all__ = ["attach_layer_rotary_embedding", "keep_layer_rotary_embedding"]

# Every attribute a rotary class reads from a config, by (class, whether `head_dim` is derived, the layer's
# `rope_parameters`).
_ROTARY_READS: dict[tuple, frozenset[str]] = {}


def attach_layer_rotary_embedding(
    layer: nn.Module,
    rotary_cls: type[nn.Module],
    config: PreTrainedConfig,
    layer_idx: int,
    overrides: dict,
    attach: bool,
) -> set[str]:
    """Gives a layer its own rotary embedding when its overrides change what the rotary embedding reads.

    Returns the overrides the rotary embedding reads; with `attach=False` (the layer attends to nothing) they count
    as honoured but nothing is attached.
    """
    overridden = frozenset(overrides) - {"skip"}
    if not overridden:
        return set()
    # Which attributes a rotary class reads depends on the rope type and on whether `head_dim` is set or derived, not
    # on the other values: probe once per such kind, so that most layers (wider or narrower FFNs, fewer KV heads)
    # build nothing.
    head_dim = overrides.get("head_dim", config._getattr_without_heterogeneous_validation("head_dim", None))
    rope = overrides.get("rope_parameters", config._getattr_without_heterogeneous_validation("rope_parameters", None))
    key = (rotary_cls, head_dim is None, repr(rope))
    all_reads = _ROTARY_READS.get(key)
    if all_reads is None:
        probe_config = make_layer_config(config, layer_idx)
        # On the CPU whatever device the model is built on: on the meta device (`from_pretrained` builds there), torch
        # computes the rotary buffers through its Python decompositions, 2.4 ms per probe instead of 0.2 ms on a
        # 2-core VM.
        with torch.device("cpu"):
            rotary_cls(config=probe_config)
        all_reads = _ROTARY_READS[key] = frozenset(stop_recording_reads(probe_config))
    reads = all_reads & overridden
    if reads and attach:
        layer_config = make_layer_config(config, layer_idx)
        _use(layer, rotary_cls(config=layer_config))
        stop_recording_reads(layer_config)
    return set(reads)


def keep_layer_rotary_embedding(old_layer: nn.Module, new_layer: nn.Module) -> None:
    """A layer that replaces another (a decoder backend's) keeps the rotary embedding the old one had, if any."""
    rotary = getattr(old_layer, "rotary_emb", None)
    if rotary is not None:
        _use(new_layer, rotary)


def _use(layer: nn.Module, rotary: nn.Module) -> None:
    layer.rotary_emb = rotary
    layer.register_forward_pre_hook(_use_layer_rotary_embedding, with_kwargs=True)


def _use_layer_rotary_embedding(layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    hidden_states = args[0] if args else kwargs["hidden_states"]
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        raise ValueError(
            f"{type(layer).__name__} has a rotary embedding of its own (its head_dim or rope parameters differ from "
            "the model's), which needs the `position_ids` keyword argument; this call passed none."
        )
    kwargs["position_embeddings"] = layer.rotary_emb(hidden_states, position_ids)
    return args, kwargs
