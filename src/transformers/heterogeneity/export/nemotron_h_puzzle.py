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
"""A heterogeneous NemotronH model written as a Nemotron-H Puzzle checkpoint, as Nemotron-Labs-3-Puzzle is released.

The released format (see `models/nemotron_h_puzzle/configuration_nemotron_h_puzzle.py` for its sources):

- `block_configs`: one flat entry per block keyed by `block_type`; a MoE block always gives its expert count, top-k,
  expert width and shared-expert width, an MLP block its width. An optional field (`moe_latent_size`,
  `routed_scaling_factor`, `n_group`, `topk_group`, `norm_topk_prob`, a Mamba block's `ssm_state_size`) stays a
  global value while every block has the global value; otherwise it is written in each block whose value is not
  NemotronH's default.
- Every field written in a block is listed in `blockwise_members` and deleted from the globals, so a block that leaves
  it out reads NemotronH's default (the release's remote code deletes the global and reads the default back).
- `hybrid_override_pattern` is derived from the block types. No MTP layers are written (the model has none).
- Tensors: NemotronH's released names, as upstream's checkpoint conversion mapping for `nemotron_h` reverts them
  (`conversion_mapping.py`: `backbone.` for `model.`, one `mixer.experts.{e}.up_proj.weight` / `down_proj.weight`
  per expert for the stacked `mixer.experts.up_proj` / `down_proj`).

A skipped block (`"skip": ["mixer"]`) computes `x + 0`: it is left out, and the blocks after it are renumbered, which
is the same function; the export says so. Per-block attributes the format has no field for (attention heads, KV
heads, head size, Mamba heads, a field of another block type) are refused by block and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch

from ...models.nemotron_h.configuration_nemotron_h import NemotronHConfig
from ...models.nemotron_h_puzzle.configuration_nemotron_h_puzzle import BLOCK_FIELDS, BLOCK_TYPES
from .plan import (
    GENERIC_KEYS,
    ExportError,
    ExportPlan,
    check_layer_fields,
    check_source_type,
    layer_overrides,
    refuse,
    release_conventions,
)


__all__ = ["plan_nemotron_h_puzzle"]

FAMILY = "nemotron_h_puzzle"
# The released `auto_map` (Nemotron-Labs-3-Puzzle-75B-A9B `config.json`; fixture in
# `tests/heterogeneity/nemotron_h_puzzle_checkpoint.py`).
AUTO_MAP = {
    "AutoConfig": "configuration_nemotron_h_puzzle.NemotronHPuzzleConfig",
    "AutoModelForCausalLM": "modeling_nemotron_h_puzzle.NemotronHPuzzleForCausalLM",
}
_RELEASED_TYPE = {nemotron_name: released for released, nemotron_name in BLOCK_TYPES.items()}
_PATTERN = {"mamba": "M", "attention": "*", "moe": "E", "mlp": "-"}
_STACKED_EXPERTS = re.compile(r"^(.*\.mixer\.experts)\.(up_proj|down_proj)$")
_LAYER = re.compile(r"^backbone\.layers\.(\d+)\.")
# Keys of NemotronH's config that describe MTP layers, which the export does not write.
_MTP_KEYS = ("mtp_layers_block_type", "mtp_hybrid_override_pattern", "mtp_block_configs")


def plan_nemotron_h_puzzle(config: Any) -> ExportPlan:
    """The Nemotron-H Puzzle checkpoint of a canonical NemotronH config; refuses what the format cannot express."""
    check_source_type(FAMILY, config, ("nemotron_h",), "its blocks are NemotronH blocks")
    overrides = layer_overrides(config)
    all_fields = {name for fields in BLOCK_FIELDS.values() for name in fields}
    check_layer_fields(
        FAMILY,
        overrides,
        all_fields,
        lambda name: f"a {FAMILY} block has no `{name}` field (it has {sorted(all_fields)}, by block type)",
    )
    globals_ = release_conventions(config.to_dict())
    kept = [idx for idx in range(config.num_hidden_layers) if "mixer" not in overrides.get(idx, {}).get("skip", [])]
    if not kept:
        raise ExportError(f"Cannot export to {FAMILY}: every block is skipped. Nothing was written.")
    block_types = [_RELEASED_TYPE[config.layers_block_type[idx]] for idx in kept]
    layer_values = []
    for idx, block_type in zip(kept, block_types):
        for name, value in overrides.get(idx, {}).items():
            if name not in ("skip", *BLOCK_FIELDS[block_type]):
                raise refuse(FAMILY, idx, name, value, f"it is not a field of {block_type!r} blocks")
        layer = config.per_layer_config[idx]
        layer_values.append({name: getattr(layer, name) for name in BLOCK_FIELDS[block_type]})
    defaults = NemotronHConfig().to_dict()
    written = _blockwise_fields(block_types, layer_values, globals_, defaults)
    blocks, expected = [], {}
    for new_idx, (block_type, values) in enumerate(zip(block_types, layer_values)):
        block = {"block_type": block_type}
        # A written optional field is deleted from the globals, so a block leaving it out reads NemotronH's default:
        # each block writes it where its value is another (the release's writer drops nulls too).
        block.update(
            {
                name: values[name]
                for name, (required, _, _) in BLOCK_FIELDS[block_type].items()
                if name in written[block_type] and (required or values[name] != defaults.get(name))
            }
        )
        blocks.append(block)
        expected[new_idx] = {**values, "skip": []}
    members = sorted({name for block in blocks for name in block})
    for key in ("per_layer_config", "layers_block_type", "transformers_version", *_MTP_KEYS, *members):
        globals_.pop(key, None)
    for key in GENERIC_KEYS:
        globals_.pop(key, None)
    globals_.update(
        {
            "architectures": ["NemotronHPuzzleForCausalLM"],
            "auto_map": dict(AUTO_MAP),
            "model_type": FAMILY,
            "block_configs": blocks,
            "blockwise_members": members,
            "hybrid_override_pattern": "".join(_PATTERN[block_type] for block_type in block_types),
            "num_hidden_layers": len(blocks),
            "num_nextn_predict_layers": 0,
        }
    )
    renumber = {old: new for new, old in enumerate(kept)}
    dropped = sorted(set(range(config.num_hidden_layers)) - set(kept))
    notes = [
        f"block {idx} is skipped (it computes x + 0): left out, and the blocks after it renumbered" for idx in dropped
    ]
    kinds = set(block_types)
    for block_type in ("moe", "mamba", "mlp"):
        varying = {name for name in BLOCK_FIELDS[block_type] if name in written[block_type]}
        values = [values for kind, values in zip(block_types, layer_values) if kind == block_type]
        if any(len({value[name] for value in values}) > 1 for name in varying):
            kinds.add(f"per_block_{block_type}")
    return ExportPlan(FAMILY, globals_, _released_tensors(renumber), kinds, notes, expected)


def _blockwise_fields(
    block_types: list[str], layer_values: list[dict[str, Any]], globals_: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, set[str]]:
    """Per block type, the fields written in its blocks: the required ones, and the optional ones where some block
    differs from the global value. Such a field is then deleted from the globals, so a block that leaves it out (the
    writer drops nulls) reads NemotronH's default (`defaults`): a null value is allowed only where that default is
    null."""
    written = {}
    for block_type, fields in BLOCK_FIELDS.items():
        values = [values for kind, values in zip(block_types, layer_values) if kind == block_type]
        written[block_type] = {
            name
            for name, (required, _, _) in fields.items()
            if required or any(value[name] != globals_.get(name) for value in values)
        }
        for name in sorted(written[block_type]):
            if defaults.get(name) is not None and any(value[name] is None for value in values):
                raise ExportError(
                    f"Cannot export to {FAMILY}: the {block_type} blocks differ in `{name}`, and a block without one "
                    f"would read NemotronH's default {defaults[name]!r} instead of null. Nothing was written."
                )
    return written


def _released_tensors(renumber: dict[int, int]):
    """Source tensor (upstream's model names or the released ones) -> the released names, per block renumbered."""

    def transform(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        if name.startswith("model."):
            name = "backbone." + name.removeprefix("model.")
        layer = _LAYER.match(name)
        if layer is not None:
            if int(layer[1]) not in renumber:
                raise ExportError(f"{name} belongs to a skipped block, which holds no tensors.")
            name = f"backbone.layers.{renumber[int(layer[1])]}." + name[layer.end() :]
        stacked = _STACKED_EXPERTS.match(name)
        if stacked is None:
            yield name, tensor
            return
        for expert, weight in enumerate(tensor.unbind(0)):
            yield f"{stacked[1]}.{expert}.{stacked[2]}.weight", weight.clone()  # its own storage, as safetensors needs

    return transform
