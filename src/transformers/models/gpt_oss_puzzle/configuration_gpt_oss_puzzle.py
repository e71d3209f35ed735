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
"""gpt-oss-puzzle (`model_type: "gpt_oss_puzzle"`): NVIDIA's gpt-oss-puzzle-88B, derived from gpt-oss-120b by
removing experts and shortening attention windows layer by layer.

Its `config.json` is a GPT-OSS config plus `block_configs`, one entry per layer, each giving that layer's
`num_local_experts` and `sliding_window` (`None` for full attention). They map onto the per-layer vocabulary:

| block field | per-layer value |
|---|---|
| `num_local_experts` | `num_local_experts` (where it differs from the global value) |
| `sliding_window` (optional) | `layer_types[i]`: `"full_attention"` for `None` or absent, else `"sliding_attention"` with that window (a per-layer `sliding_window` where it differs from the global one; a null global one becomes the most common window) |

A block without `sliding_window` is a full-attention layer: the release's readers take the field with `.get` (vLLM's
`gpt_oss_puzzle.py`, mlx-lm's port). `layer_types` is derived from the blocks; a `layer_types` in the file that disagrees with them is replaced (the
blocks describe the trained model) with a warning. Any other block field is refused with an error naming the layer and
the field.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...heterogeneity.checkpoint_formats.format_utils import (
    CheckpointFormatConfigMixin,
    most_common,
    mxfp4_dequantized_on_load,
)
from ...heterogeneity.configuration_utils import HeterogeneousConfigError
from ...utils import logging
from ..gpt_oss.configuration_gpt_oss import GptOssConfig


logger = logging.get_logger(__name__)

__all__ = ["GptOssPuzzleConfig"]

_BLOCK_FIELDS = ("num_local_experts", "sliding_window")


@strict
class GptOssPuzzleConfig(CheckpointFormatConfigMixin, GptOssConfig):
    r"""
    Configuration of a gpt-oss-puzzle checkpoint: a GPT-OSS config plus `block_configs`, translated into
    `per_layer_config` and `layer_types` when the config is made and saved back unchanged.

    Args:
        block_configs (`list[dict]`, *optional*):
            One entry per layer, `{"num_local_experts": int, "sliding_window": int | None}` (`sliding_window` may be
            absent: full attention). Without it, every layer as the global GPT-OSS values say.
    """

    model_type = "gpt_oss_puzzle"
    format_fields = ("block_configs",)
    canonical_model_type = "gpt_oss"
    canonical_architecture = "GptOssForCausalLM"

    block_configs: list[dict[str, Any]] | None = None

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        if self.block_configs is None:  # every layer as the global GPT-OSS values and `layer_types` say
            return {}, {}
        blocks = self._one_block_per_layer()
        for layer_idx, block in enumerate(blocks):
            _check_block(layer_idx, block)
        windows = [block.get("sliding_window") for block in blocks]
        layer_types = ["full_attention" if window is None else "sliding_attention" for window in windows]
        if self.layer_types is not None and list(self.layer_types) != layer_types:
            layer_idx = next(i for i, kind in enumerate(layer_types) if self.layer_types[i] != kind)
            logger.warning(
                f"gpt_oss_puzzle: `layer_types[{layer_idx}]`={self.layer_types[layer_idx]!r} disagrees with "
                f"`block_configs[{layer_idx}].sliding_window`={windows[layer_idx]!r}; `layer_types` is derived from "
                "the blocks."
            )
        derived = {"layer_types": layer_types}
        sliding_window = self.sliding_window
        if sliding_window is None:
            # Then the most common real window, so that only the other windows are per-layer values.
            sliding_window = derived["sliding_window"] = most_common(filter(None, windows), None)
        per_layer = {}
        for layer_idx, block in enumerate(blocks):
            layer = {}
            if block["num_local_experts"] != self.num_local_experts:
                layer["num_local_experts"] = block["num_local_experts"]
            if windows[layer_idx] not in (None, sliding_window):
                layer["sliding_window"] = windows[layer_idx]
            if layer:
                per_layer[layer_idx] = layer
        return per_layer, derived

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if "num_local_experts" in (self.per_layer_attributes or ()):
            self._dequantize_mxfp4_on_load()

    def _dequantize_mxfp4_on_load(self) -> None:
        quantization = mxfp4_dequantized_on_load(
            getattr(self, "quantization_config", None)
        )  # only if the file has one
        if quantization is not None:
            self.quantization_config = quantization
            self._added_dequantize = True  # not written back: the file stays as released

    def _to_source_format(self, output: dict[str, Any]) -> dict[str, Any]:
        output = super()._to_source_format(output)
        output.pop("_added_dequantize", None)
        if getattr(self, "_added_dequantize", False) and isinstance(output.get("quantization_config"), dict):
            output["quantization_config"] = {
                key: value for key, value in output["quantization_config"].items() if key != "dequantize"
            }
        return output


def _check_block(layer_idx: int, block: Any) -> None:
    if not isinstance(block, dict):
        raise HeterogeneousConfigError(
            f"gpt_oss_puzzle layer {layer_idx}: a block config is a mapping of {list(_BLOCK_FIELDS)}, got {block!r}."
        )
    unknown = sorted(set(block) - set(_BLOCK_FIELDS))
    if unknown:
        raise HeterogeneousConfigError(
            f"gpt_oss_puzzle layer {layer_idx}: `{unknown[0]}`={block[unknown[0]]!r} is refused: the block field is "
            f"unknown to transformers.heterogeneity (it reads {list(_BLOCK_FIELDS)}), and ignoring it could build a "
            "different model than the checkpoint's."
        )
    if "num_local_experts" not in block:
        raise HeterogeneousConfigError(
            f"gpt_oss_puzzle layer {layer_idx}: the block config has no `num_local_experts`."
        )
    experts, window = block["num_local_experts"], block.get("sliding_window")
    if not isinstance(experts, int) or isinstance(experts, bool) or experts <= 0:
        raise HeterogeneousConfigError(
            f"gpt_oss_puzzle layer {layer_idx}: `num_local_experts`={experts!r} must be a positive integer."
        )
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window <= 0):
        raise HeterogeneousConfigError(
            f"gpt_oss_puzzle layer {layer_idx}: `sliding_window`={window!r} must be a positive integer or null "
            "(full attention)."
        )
