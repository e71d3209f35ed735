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
"""A heterogeneous GPT-OSS model written as a gpt-oss-puzzle checkpoint, as gpt-oss-puzzle-88B is released.

The format is a GPT-OSS config plus flat `block_configs`, one `{"num_local_experts", "sliding_window"}` entry per
layer (`null` window: full attention), read by vLLM's `gpt_oss_puzzle.py` and this package's loader
(`models/gpt_oss_puzzle/`); the tensors keep GPT-OSS's names, so they are written as they are (MXFP4 experts stay
MXFP4, with the source's `quantization_config`). `layer_types` is written too, derived from the windows. Any other
per-layer attribute (expert width, top-k, KV heads, head size) and any skipped sub-block have no field in the format
and are refused by layer and field.
"""

from __future__ import annotations

from typing import Any

from .plan import (
    GENERIC_KEYS,
    ExportError,
    ExportPlan,
    check_layer_fields,
    check_source_type,
    layer_overrides,
    plain_tensor,
    refuse,
    release_conventions,
)


__all__ = ["plan_gpt_oss_puzzle"]

FAMILY = "gpt_oss_puzzle"
# The released `auto_map` (gpt-oss-puzzle-88B `config.json`; fixture in `tests/heterogeneity/gpt_oss_checkpoints.py`).
AUTO_MAP = {
    "AutoConfig": "configuration_gpt_oss_puzzle.GptOssPuzzleConfig",
    "AutoModelForCausalLM": "modeling_gpt_oss_puzzle.GptOssPuzzleForCausalLM",
}


def plan_gpt_oss_puzzle(config: Any) -> ExportPlan:
    """The gpt-oss-puzzle checkpoint of a canonical GPT-OSS config; refuses what the format cannot express."""
    check_source_type(FAMILY, config, ("gpt_oss",), "its blocks are GPT-OSS decoder layers")
    overrides = layer_overrides(config)
    for layer_idx, values in sorted(overrides.items()):
        if values.get("skip"):
            raise refuse(
                FAMILY, layer_idx, "skip", values["skip"], f"a {FAMILY} block has no field for a skipped sub-block"
            )
    check_layer_fields(
        FAMILY,
        overrides,
        ("num_local_experts", "sliding_window"),
        lambda name: (
            f"a {FAMILY} block gives a layer's expert count and window only: `{name}` has one value for "
            "all layers in the format"
        ),
    )
    values = release_conventions(config.to_dict())
    layer_types = values["layer_types"]
    blocks, expected, kinds = [], {}, {"moe"}
    for layer_idx in range(config.num_hidden_layers):
        layer = config.per_layer_config[layer_idx]
        window = layer.sliding_window if layer_types[layer_idx] == "sliding_attention" else None
        blocks.append({"num_local_experts": layer.num_local_experts, "sliding_window": window})
        expected[layer_idx] = {"num_local_experts": layer.num_local_experts, "skip": []}
        if window is not None:
            expected[layer_idx]["sliding_window"] = window
        kinds.add("full_attention" if window is None else "sliding_attention")
    if len({block["num_local_experts"] for block in blocks}) > 1:
        kinds.add("per_layer_experts")
    if len({block["sliding_window"] for block in blocks} - {None}) > 1:
        kinds.add("per_layer_windows")
    quantization = values.get("quantization_config")
    if quantization is not None and quantization.get("quant_method") != "mxfp4":
        raise ExportError(
            f"Cannot export to {FAMILY}: `quantization_config` is {quantization.get('quant_method')!r}; the format's "
            "experts are plain or MXFP4. Nothing was written."
        )
    if quantization is not None:
        # The loader adds `dequantize` when the expert counts differ per layer; the file stays as released.
        values["quantization_config"] = {key: value for key, value in quantization.items() if key != "dequantize"}
    for key in ("per_layer_config", "transformers_version", *(key for key in GENERIC_KEYS if key in values)):
        values.pop(key, None)
    values.update(
        {
            "architectures": ["GptOssPuzzleForCausalLM"],
            "auto_map": dict(AUTO_MAP),
            "model_type": FAMILY,
            "block_configs": blocks,
        }
    )
    return ExportPlan(FAMILY, values, plain_tensor, kinds, [], expected)
