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
(Mamba2 / attention / MoE blocks) whose blocks were pruned one by one (88 blocks; per MoE block its own expert count,
top-k, expert width, shared-expert width and LatentMoE latent size).

The released format (sources: the remote `configuration_nemotron_h_puzzle.py` of the release, whose block dataclasses
`AttentionConfig` / `MoeConfig` / `MambaConfig` / `MlpConfig` are reproduced in vLLM forks' Puzzle conversion scripts;
vLLM's `transformers_utils/configs/nemotron_h_puzzle.py`; sgl-project/sglang `python/sglang/srt/configs/nemotron_h.py`;
NVIDIA Megatron-Bridge's `nemotron_h_puzzle` bridge):

- `block_configs`: one flat entry per block, keyed by `block_type` (`"mamba"`, `"attention"`, `"moe"`, `"mlp"`); the
  writer drops `None` fields. The block types make the layer pattern: `hybrid_override_pattern` / `layers_block_type`
  are derived from them (checked against the blocks when the file has them, never needed).
- Every field set in a block is deleted from the global config and listed in `blockwise_members`: there is no global
  `n_routed_experts`, `moe_intermediate_size`, ... A block that lacks an optional field gets the global value, which
  for a blockwise member is NemotronH's default (the remote code deletes the global and reads the default back).
- `mtp_block_configs` (one attention + MoE pair) describe the multi-token-prediction layers, with tensors under `mtp.*`.

| block type | field | per-layer value |
|---|---|---|
| `moe` | `n_routed_experts`, `num_experts_per_tok`, `moe_intermediate_size`, `moe_shared_expert_intermediate_size` (required) | the same per-layer attributes |
| `moe` | `moe_latent_size` (LatentMoE: `mixer.fc1_latent_proj` / `fc2_latent_proj`, experts in the latent width), `routed_scaling_factor`, `n_group`, `topk_group`, `norm_topk_prob` | the same per-layer attributes |
| `mamba` | `ssm_state_size` | the same per-layer attribute |
| `mlp` | `intermediate_size` (required) | the same per-layer attribute |
| `attention` | `sliding_window` | refused unless null: upstream NemotronH attention has no window |
| `attention` | `q_indexer_*` (selective attention in some exports) | refused unless null |

Upstream NemotronH (5.23) builds no MTP layers (it drops `mtp.*` tensors on load), so neither does this package: the
MTP blocks are checked like the others, and their tensors are read and reported as unused when the model loads
(`modeling_nemotron_h_puzzle.py`). Any other field, or a field of another block type, is refused with an error naming
the block and the field.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...heterogeneity.checkpoint_formats.format_utils import CheckpointFormatConfigMixin, most_common
from ...heterogeneity.configuration_utils import HeterogeneousConfigError
from ..nemotron_h.configuration_nemotron_h import NemotronHConfig


__all__ = ["NemotronHPuzzleConfig"]

# Block type in `block_configs` -> NemotronH's name in `layers_block_type`, and its pattern letter.
BLOCK_TYPES = {"mamba": "linear_attention", "attention": "full_attention", "moe": "moe", "mlp": "mlp"}
_PATTERN = {"linear_attention": "M", "full_attention": "*", "moe": "E", "mlp": "-"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# Per block type: field -> (required, check of its value, what the check wants). The fields are those of the release's
# block dataclasses; each is an attribute NemotronH's mixer of that type reads when it is built.
BLOCK_FIELDS: dict[str, dict[str, tuple[bool, Any, str]]] = {
    "moe": {
        "n_routed_experts": (True, _positive_int, "a positive integer"),
        "num_experts_per_tok": (True, _positive_int, "a positive integer"),
        "moe_intermediate_size": (True, _positive_int, "a positive integer"),
        "moe_shared_expert_intermediate_size": (True, _positive_int, "a positive integer"),
        "moe_latent_size": (False, _positive_int, "a positive integer"),
        "routed_scaling_factor": (False, _positive_number, "a positive number"),
        "n_group": (False, _positive_int, "a positive integer"),
        "topk_group": (False, _positive_int, "a positive integer"),
        "norm_topk_prob": (False, lambda value: isinstance(value, bool), "true or false"),
    },
    "mamba": {"ssm_state_size": (False, _positive_int, "a positive integer")},
    "mlp": {"intermediate_size": (True, _positive_int, "a positive integer")},
    "attention": {},
}
# Fields of the release's attention blocks that change what the block computes and that stock NemotronH cannot build.
_REFUSED = {
    "sliding_window": "upstream NemotronH attention has no window (every attention block attends to the whole sequence)",
}
_REFUSED_PREFIX = ("q_indexer_", "selective (indexed) attention is not implemented by upstream NemotronH")


@strict
class NemotronHPuzzleConfig(CheckpointFormatConfigMixin, NemotronHConfig):
    r"""
    Configuration of a Nemotron-H Puzzle checkpoint: a NemotronH config whose blocks are described by
    `block_configs` (see the module docstring), translated into `layers_block_type` and `per_layer_config` when the
    config is made and saved back in the released format.

    Args:
        block_configs (`list[dict]`, *optional*):
            One flat entry per block, keyed by `block_type`. Without it, the blocks NemotronH's own layer pattern and
            global values describe.
        mtp_block_configs (`list[dict]`, *optional*):
            The multi-token-prediction blocks; checked, not built (upstream NemotronH has no MTP layers).
        blockwise_members (`list[str]`, *optional*):
            The fields set in some block, which the release deletes from the global config; recomputed when saved.
    """

    model_type = "nemotron_h_puzzle"
    format_fields = ("block_configs", "mtp_block_configs", "blockwise_members")
    canonical_model_type = "nemotron_h"
    canonical_architecture = "NemotronHForCausalLM"

    block_configs: list[dict[str, Any]] | None = None
    mtp_block_configs: list[dict[str, Any]] | None = None
    blockwise_members: list[str] | None = None

    def __post_init__(self, **kwargs):
        # NemotronH's own `__post_init__` reads the layer pattern; the blocks are its source.
        blocks = self.block_configs
        if blocks is not None:  # without blocks, NemotronH's own layer pattern and global values
            if not isinstance(blocks, list) or not blocks:
                raise HeterogeneousConfigError(
                    f"nemotron_h_puzzle: `block_configs` must be a non-empty list of blocks, got {blocks!r}."
                )
            block_types = [_block_type("block", idx, block) for idx, block in enumerate(blocks)]
            self._check_pattern("hybrid_override_pattern", kwargs.pop("hybrid_override_pattern", None), block_types)
            if self.layers_block_type is not None:
                self._check_pattern("layers_block_type", self.layers_block_type, block_types)
            self.layers_block_type = block_types
        mtp_blocks = self.mtp_block_configs or []
        mtp_types = [_block_type("MTP block", idx, block) for idx, block in enumerate(mtp_blocks)]
        for idx, block in enumerate(mtp_blocks):
            self._block_values("MTP block", idx, mtp_types[idx], block)
        kwargs.pop("mtp_hybrid_override_pattern", None)
        if mtp_types:
            self.mtp_layers_block_type = mtp_types
        members = sorted(
            {name for block in (blocks or []) + mtp_blocks for name, value in block.items() if value is not None}
        )
        if self.blockwise_members is not None and sorted(self.blockwise_members) != members:
            raise HeterogeneousConfigError(
                f"nemotron_h_puzzle: `blockwise_members`={self.blockwise_members} does not list the fields the blocks "
                f"set ({members}); the release writes exactly those."
            )
        self.blockwise_members = members
        super().__post_init__(**kwargs)

    @staticmethod
    def _check_pattern(name: str, given: Any, block_types: list[str]) -> None:
        if given is None:
            return
        expected = "".join(_PATTERN[kind] for kind in block_types)
        if isinstance(given, str):
            found = given
        else:  # a list of block types, in NemotronH's names or the release's
            found = "".join(_PATTERN.get(BLOCK_TYPES.get(kind, kind), "?") for kind in given)
        if found != expected:
            raise HeterogeneousConfigError(
                f"nemotron_h_puzzle: `{name}` gives the blocks {found!r} but `block_configs` gives {expected!r}; "
                "the pattern is derived from the blocks' `block_type`."
            )

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        if self.block_configs is None:
            return {}, {}
        values = [
            self._block_values("block", idx, kind, block)
            for idx, (kind, block) in enumerate(zip(self.layers_block_type, self.block_configs))
        ]
        # The required MoE / MLP fields have no global value in the release: the most common block value becomes the
        # global one, so that only the other blocks carry a per-layer value (upstream drops overrides equal to it).
        derived = {}
        for kind in ("moe", "mlp"):  # the same name in both vocabularies
            layers = [layer for layer, block_type in zip(values, self.layers_block_type) if block_type == kind]
            for name, (required, _, _) in BLOCK_FIELDS[kind].items():
                if required and layers:
                    derived[name] = most_common((layer[name] for layer in layers), None)
        per_layer = {}
        for idx, layer in enumerate(values):
            overrides = {
                name: value for name, value in layer.items() if value != derived.get(name, getattr(self, name))
            }
            if overrides:
                per_layer[idx] = overrides
        return per_layer, derived

    def _block_values(self, what: str, idx: int, block_type: str, block: dict[str, Any]) -> dict[str, Any]:
        """The per-layer attributes a block sets, checked; refuses fields its type does not have."""
        kind = next(name for name, nemotron_name in BLOCK_TYPES.items() if nemotron_name == block_type)
        fields = BLOCK_FIELDS[kind]
        layer = {}
        for name, value in sorted(block.items()):
            if name == "block_type" or value is None:  # the writer drops nulls; a null changes nothing
                continue
            where = f"nemotron_h_puzzle {what} {idx} ({kind}): `{name}`={value!r}"
            if name not in fields:
                raise HeterogeneousConfigError(f"{where} is refused: {_why_refused(name, kind)}.")
            _, check, wanted = fields[name]
            if not check(value):
                raise HeterogeneousConfigError(f"{where} must be {wanted}.")
            layer[name] = value
        missing = [name for name, (required, _, _) in fields.items() if required and name not in layer]
        if missing:
            raise HeterogeneousConfigError(
                f"nemotron_h_puzzle {what} {idx} ({kind}): the block has no `{missing[0]}`; a {kind} block of the "
                f"release sets {[name for name, (required, _, _) in fields.items() if required]} (there is no global "
                "value to fall back on)."
            )
        return layer

    def _to_source_format(self, output: dict[str, Any]) -> dict[str, Any]:
        """The released layout: blockwise members deleted from the globals, the pattern as a string."""
        output = super()._to_source_format(output)
        for name in self.blockwise_members:
            output.pop(name, None)
        output.pop("layers_block_type", None)
        output.pop("mtp_layers_block_type", None)
        output["hybrid_override_pattern"] = "".join(_PATTERN[kind] for kind in self.layers_block_type)
        if self.mtp_block_configs:
            output["mtp_hybrid_override_pattern"] = "".join(_PATTERN[kind] for kind in self.mtp_layers_block_type)
        return output


def _block_type(what: str, idx: int, block: Any) -> str:
    kind = block.get("block_type") if isinstance(block, dict) else None
    if kind not in BLOCK_TYPES:
        raise HeterogeneousConfigError(
            f"nemotron_h_puzzle {what} {idx}: `block_type`={kind!r}; a block is a mapping whose `block_type` is one of "
            f"{sorted(BLOCK_TYPES)}, got {block!r}."
        )
    return BLOCK_TYPES[kind]


def _why_refused(name: str, kind: str) -> str:
    if kind == "attention" and name in _REFUSED:
        return _REFUSED[name]
    if kind == "attention" and name.startswith(_REFUSED_PREFIX[0]):
        return _REFUSED_PREFIX[1]
    owner = next((other for other, fields in BLOCK_FIELDS.items() if name in fields), None)
    if owner is None and name in _REFUSED:
        owner = "attention"
    if owner is not None:
        return f"it is a field of {owner!r} blocks, not of {kind!r} blocks"
    return "the field is unknown to transformers.heterogeneity, and ignoring it could build a different model"
