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
"""Nemotron-H Puzzle (`model_type: "nemotron_h_puzzle"`): NVIDIA's Nemotron-Labs-3-Puzzle-75B-A9B, a NemotronH hybrid
(Mamba2 / attention / MoE blocks) whose MoE blocks were pruned one by one (88 blocks, expert widths 1280-2688, top-k
4-22).

The release's `config.json` is not documented; this module assumes the shape NVIDIA's other Puzzle exports use: a
NemotronH config (`hybrid_override_pattern` or `layers_block_type`) plus `block_configs`, one entry per block:

```json
{"block_type": "moe", "moe_intermediate_size": 1856, "num_experts_per_tok": 6}
```

| block field | per-layer value |
|---|---|
| `block_type` (optional) | checked against the block's type in the pattern: `mamba` (`M`), `attention` (`*`), `moe` (`E`), `mlp` (`-`) |
| `moe_intermediate_size`, `num_experts_per_tok` (MoE blocks) | the same per-layer attributes |
| `num_key_value_heads` (attention blocks) | the same per-layer attribute |
| `intermediate_size` (MLP blocks) | the same per-layer attribute |
| `no_op: true` (any block) | `"skip": ["mixer"]` |

A null global `moe_intermediate_size` / `num_experts_per_tok` becomes the most common value of the MoE blocks. Any other
field with a non-default value, or a field of another block type, is refused with an error naming the block and the
field: ignoring it would build a different model than the checkpoint's.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ....models.nemotron_h.configuration_nemotron_h import NemotronHConfig
from ...configuration_utils import HeterogeneousConfigError
from ..format_utils import CheckpointFormatConfigMixin, most_common


__all__ = ["NemotronHPuzzleConfig"]

# Block type in `block_configs` -> NemotronH's name in `layers_block_type`.
_BLOCK_TYPES = {"mamba": "linear_attention", "attention": "full_attention", "moe": "moe", "mlp": "mlp"}
# Per-layer attributes each block type's mixer reads when it is built.
_BLOCK_FIELDS = {
    "linear_attention": (),
    "full_attention": ("num_key_value_heads",),
    "moe": ("moe_intermediate_size", "num_experts_per_tok"),
    "mlp": ("intermediate_size",),
}
# Global values the release may leave null, filled from the blocks that set them.
_NULLABLE_GLOBALS = ("moe_intermediate_size", "num_experts_per_tok")


@strict
class NemotronHPuzzleConfig(CheckpointFormatConfigMixin, NemotronHConfig):
    r"""
    Configuration of a Nemotron-H Puzzle checkpoint: a NemotronH config plus `block_configs`, translated into
    `per_layer_config` when the config is made and saved back unchanged.

    Args:
        block_configs (`list[dict]`):
            One entry per block (see the module docstring for the fields).
        moe_intermediate_size (`int`, *optional*):
            Global expert width; when null, the most common width of the MoE blocks.
        num_experts_per_tok (`int`, *optional*):
            Global top-k; when null, the most common top-k of the MoE blocks.
    """

    model_type = "nemotron_h_puzzle"
    format_fields = ("block_configs",)
    canonical_model_type = "nemotron_h"
    canonical_architecture = "NemotronHForCausalLM"

    block_configs: list[dict[str, Any]] | None = None
    moe_intermediate_size: int | None = None
    num_experts_per_tok: int | None = None

    def __post_init__(self, **kwargs):
        # The blocks are read against their types, which NemotronH's own `__post_init__` derives from the pattern
        # only after the translation: resolve them first.
        pattern = kwargs.pop("hybrid_override_pattern", None)
        if self.layers_block_type is None and pattern is not None:
            self.layers_block_type = self._pattern_to_list(pattern)
        super().__post_init__(**kwargs)

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        block_types = self.layers_block_type or []
        blocks = self.block_configs or []
        if len(blocks) != len(block_types):
            raise HeterogeneousConfigError(
                f"nemotron_h_puzzle: `block_configs` has {len(blocks)} entries but the block pattern has "
                f"{len(block_types)} blocks; a checkpoint gives one entry per block."
            )
        per_layer = {
            idx: self._translate_block(idx, block_type, block or {})
            for idx, (block_type, block) in enumerate(zip(block_types, blocks))
        }
        derived = {}
        for name in _NULLABLE_GLOBALS:
            if getattr(self, name) is None:
                values = [layer[name] for layer in per_layer.values() if name in layer]
                if not values:
                    raise HeterogeneousConfigError(
                        f"nemotron_h_puzzle: `{name}` is null and no MoE block in `block_configs` sets it."
                    )
                derived[name] = most_common(values, None)
        return {idx: layer for idx, layer in per_layer.items() if layer}, derived

    def _translate_block(self, layer_idx: int, block_type: str, block: dict[str, Any]) -> dict[str, Any]:
        declared = block.get("block_type")
        if declared is not None and _BLOCK_TYPES.get(declared) != block_type:
            raise HeterogeneousConfigError(
                f"nemotron_h_puzzle block {layer_idx}: `block_type`={declared!r} but the pattern makes it a "
                f"{block_type!r} block; `block_type` is one of {sorted(_BLOCK_TYPES)} and must agree with the pattern."
            )
        layer: dict[str, Any] = {}
        for field, value in sorted(block.items()):
            # A field at its default says nothing; `0 == False`, so compare by identity.
            if field in ("block_type", "no_op") or value is None or value is False or value in ({}, []):
                continue
            if field not in _BLOCK_FIELDS[block_type]:
                owner = next((kind for kind, fields in _BLOCK_FIELDS.items() if field in fields), None)
                why = (
                    f"it belongs to {owner!r} blocks"
                    if owner
                    else "this field is unknown to transformers.heterogeneity"
                )
                raise HeterogeneousConfigError(
                    f"nemotron_h_puzzle block {layer_idx} ({block_type}): `{field}`={value!r} is refused: {why}, and "
                    "ignoring it would build a different model than the checkpoint's."
                )
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise HeterogeneousConfigError(
                    f"nemotron_h_puzzle block {layer_idx}: `{field}`={value!r} must be a positive integer."
                )
            layer[field] = value
        if block.get("no_op"):
            if layer:
                raise HeterogeneousConfigError(
                    f"nemotron_h_puzzle block {layer_idx}: `no_op` removes the block, so it takes no other fields "
                    f"(got {sorted(layer)})."
                )
            layer["skip"] = ["mixer"]
        return layer
