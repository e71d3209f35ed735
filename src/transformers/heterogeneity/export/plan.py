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
"""What every family export shares: the plan it makes before anything is written, and the checks it makes it from.

A family module (`nemotron_nas.py`, `gpt_oss_puzzle.py`, `nemotron_h_puzzle.py`) reads the source model's config
in the canonical form (stock model type plus `per_layer_config`) and returns an `ExportPlan`: the `config.json` to
write, how each source tensor becomes the family's tensors, and what the result holds (sub-block kinds, for the engine
table; notes, such as padded FFN widths). It refuses, before anything is written, whatever the family's format cannot
express, naming the layer and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_utils import HeterogeneousConfigError


__all__ = ["ExportError", "ExportPlan", "layer_overrides", "refuse", "release_conventions"]

# Written by every Transformers config and never read by a causal LM: not part of a family's `config.json`.
GENERIC_KEYS = (
    "_name_or_path",
    "chunk_size_feed_forward",
    "id2label",
    "is_encoder_decoder",
    "label2id",
    "output_attentions",
    "output_hidden_states",
    "problem_type",
    "return_dict",
)

TensorTransform = Callable[[str, torch.Tensor], Iterator[tuple[str, torch.Tensor]]]


class ExportError(HeterogeneousConfigError):
    """The model cannot be written in the requested family's format (or the source or destination is unusable)."""


@dataclass
class ExportPlan:
    """Everything an export writes, decided before the first byte is.

    Attributes:
        family: the target `model_type`.
        config: the `config.json` to write, as the family's releases write it.
        transform: source tensor name and tensor -> the family's tensors (renamed, split, padded); called one source
            tensor at a time, so the export holds one shard.
        kinds: the sub-block kinds the result holds (names of `engines.SUB_BLOCK_KINDS`), for the engine table.
        notes: what the export changed without changing the model (padded widths, dropped no-op blocks).
        expected_layers: per-layer values the written `config.json` must give back through the family's loader,
            `{layer: {attribute: value}}` (`"skip"` as a sorted list); checked before the output is moved in place.
    """

    family: str
    config: dict[str, Any]
    transform: TensorTransform
    kinds: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    expected_layers: dict[int, dict[str, Any]] = field(default_factory=dict)


def refuse(family: str, layer_idx: int, name: str, value: Any, why: str) -> ExportError:
    """The error for what a family cannot express, naming the layer and the field."""
    return ExportError(
        f"Cannot export to {family}: layer {layer_idx} has `{name}`={value!r}, and {why}. Nothing was written."
    )


def check_source_type(family: str, config: Any, model_types: tuple[str, ...], why: str) -> None:
    """Refuses a source whose layers are not the family's (`why` says what the family's layers are)."""
    if config.model_type not in model_types:
        raise ExportError(
            f"Cannot export a '{config.model_type}' model to {family}: {why}; {list(model_types)} models are written "
            "in it. Nothing was written."
        )


def layer_overrides(config: Any) -> dict[int, dict[str, Any]]:
    """The sparse `per_layer_config` of a canonical config, by layer index (the overrides only, skips included)."""
    raw = config.to_dict().get("per_layer_config") or {}
    return {int(layer_idx): dict(values) for layer_idx, values in raw.items()}


def check_layer_fields(
    family: str, overrides: dict[int, dict[str, Any]], allowed: Iterable[str], why: Callable[[str], str]
) -> None:
    """Refuses the first per-layer attribute the family has no field for (`why(name)` says why)."""
    allowed = set(allowed)
    for layer_idx, values in sorted(overrides.items()):
        for name, value in sorted(values.items()):
            if name != "skip" and name not in allowed:
                raise refuse(family, layer_idx, name, value, why(name))


def release_conventions(values: dict[str, Any]) -> dict[str, Any]:
    """Writes a Transformers 5 config dict with the keys the releases (and the engines that read them) use.

    Transformers 5 writes `rope_parameters` and `dtype`; the releases, and the engines that read their `config.json`
    with a 4.x `PretrainedConfig` or as plain JSON (SGLang's DeciLM reads `rope_theta` / `rope_scaling`; llama.cpp's
    converter reads either), have `rope_theta`, `rope_scaling` (null for plain rope) and `torch_dtype`. Transformers 5
    reads those keys back into the same `rope_parameters`.
    """
    values = dict(values)
    rope = values.pop("rope_parameters", None)
    if rope is not None:
        rope = dict(rope)
        values["rope_theta"] = rope.pop("rope_theta", None)
        values["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    if "dtype" in values:
        values["torch_dtype"] = values.pop("dtype")
    return values


def plain_tensor(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """A transform that writes the tensor as it is."""
    yield name, tensor
