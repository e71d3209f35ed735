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
"""Nemotron-NAS (`model_type: "nemotron-nas"`): NVIDIA's Llama-3.1-Nemotron-51B, Llama-3.3-Nemotron-Super-49B and
Llama-3.1-Nemotron-Ultra-253B, found by neural architecture search from Llama 3.

Their `config.json` gives one `block_configs` entry per layer (`{"attention": {...}, "ffn": {...}}`) and leaves the
global `intermediate_size` and `num_key_value_heads` null. Each entry maps onto the per-layer vocabulary:

| block field | per-layer value |
|---|---|
| `attention.n_heads_in_group` (or `attention.num_key_value_heads`) | `num_key_value_heads = num_attention_heads // n` |
| `attention.no_op` / `attention.replace_with_linear` | `"skip": ["attention"]` / `["linear_attention"]` |
| `ffn.ffn_mult` (or `ffn.intermediate_size`) | `intermediate_size`, rounded as below |
| `ffn.no_op` / `ffn.replace_with_linear` | `"skip": ["mlp"]` / `["linear_mlp"]` |

Anything else with a non-default value (`sparsify`, sink or windowed attention, MoE or Mamba blocks, unknown keys) is
refused with an error naming the layer and the field: building a dense model instead would be silently wrong.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ....models.llama.configuration_llama import LlamaConfig
from ...configuration_utils import HeterogeneousConfigError
from ..format_utils import CheckpointFormatConfigMixin, most_common


__all__ = ["NemotronNasConfig", "ffn_mult_to_intermediate_size"]

# Block fields this package reads. Every other field must hold its default (None, False or empty).
_ATTENTION_FIELDS = frozenset({"n_heads_in_group", "num_key_value_heads", "no_op", "replace_with_linear"})
_FFN_FIELDS = frozenset({"ffn_mult", "intermediate_size", "no_op", "replace_with_linear"})
# Fields of the released formats that change what a block computes, with what they would need.
_UNSUPPORTED = {
    "sparsify": "sparsified weights",
    "window_length": "windowed attention",
    "num_sink_tokens": "sink attention",
    "use_prefill_window_in_sink_attention": "sink attention",
    "unshifted_sink": "sink attention",
    "moe": "mixture-of-experts FFNs",
    "mamba": "Mamba mixers",
}


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """FFN width of a block: `2 * ffn_mult * hidden_size / 3`, truncated, then rounded up to a multiple of 256.

    This is the rule of the released checkpoints (their weights have these shapes): hidden 8192 with `ffn_mult`
    2.625 gives 14336, with 0.4375 gives 2560.
    """
    width = int(2 * ffn_mult * hidden_size / 3)
    return -(-width // 256) * 256


@strict
class NemotronNasConfig(CheckpointFormatConfigMixin, LlamaConfig):
    r"""
    Configuration of a Nemotron-NAS (DeciLM) checkpoint: a Llama config plus `block_configs`, translated into
    `per_layer_config` when the config is made and saved back unchanged.

    Args:
        block_configs (`list[dict]`):
            One entry per layer, `{"attention": {...}, "ffn": {...}}`, as written by NVIDIA's checkpoints.
        intermediate_size (`int`, *optional*):
            Global FFN width. Null in the released checkpoints; then the most common width of the real FFN blocks
            (only layers with another width get a per-layer value).
        num_key_value_heads (`int`, *optional*):
            Global KV-head count; null in the released checkpoints, filled like `intermediate_size`.
    """

    model_type = "nemotron-nas"
    format_fields = ("block_configs",)

    intermediate_size: int | None = None
    block_configs: list[dict[str, Any]] | None = None

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        blocks = self._one_block_per_layer()
        per_layer = {idx: self._translate_block(idx, block) for idx, block in enumerate(blocks)}
        derived = {}
        if self.num_key_value_heads is None:
            kv_heads = (layer.get("num_key_value_heads") for layer in per_layer.values())
            derived["num_key_value_heads"] = most_common(filter(None, kv_heads), self.num_attention_heads)
        if self.intermediate_size is None:
            widths = (layer.get("intermediate_size") for layer in per_layer.values())
            # A model whose FFNs are all no-op or linear builds none: any width will do.
            derived["intermediate_size"] = most_common(filter(None, widths), self.hidden_size)
        return {idx: layer for idx, layer in per_layer.items() if layer}, derived

    def _translate_block(self, layer_idx: int, block: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(block) - {"attention", "ffn"})
        if unknown:
            raise HeterogeneousConfigError(
                f"nemotron-nas layer {layer_idx}: unknown block field `{unknown[0]}`; a block holds `attention` and "
                "`ffn`."
            )
        attention = block.get("attention") or {}
        ffn = block.get("ffn") or {}
        _refuse_unsupported(layer_idx, "attention", attention, _ATTENTION_FIELDS)
        _refuse_unsupported(layer_idx, "ffn", ffn, _FFN_FIELDS)
        layer: dict[str, Any] = {}
        skips = []
        attention_kind = _sub_block_kind(layer_idx, "attention", attention)
        if attention_kind == "dense":
            layer["num_key_value_heads"] = self._kv_heads(layer_idx, attention)
        else:
            skips.append({"no_op": "attention", "linear": "linear_attention"}[attention_kind])
        ffn_kind = _sub_block_kind(layer_idx, "ffn", ffn)
        if ffn_kind == "dense":
            layer["intermediate_size"] = self._ffn_width(layer_idx, ffn)
        else:
            skips.append({"no_op": "mlp", "linear": "linear_mlp"}[ffn_kind])
        if skips:
            layer["skip"] = skips
        return layer

    def _kv_heads(self, layer_idx: int, attention: dict[str, Any]) -> int:
        group, kv_heads = attention.get("n_heads_in_group"), attention.get("num_key_value_heads")
        if group is not None:
            if not isinstance(group, int) or group <= 0 or self.num_attention_heads % group:
                raise HeterogeneousConfigError(
                    f"nemotron-nas layer {layer_idx}: `attention.n_heads_in_group`={group!r} must be a positive "
                    f"integer dividing `num_attention_heads`={self.num_attention_heads}."
                )
            if kv_heads is not None and kv_heads != self.num_attention_heads // group:
                raise HeterogeneousConfigError(
                    f"nemotron-nas layer {layer_idx}: `attention.n_heads_in_group`={group} gives "
                    f"{self.num_attention_heads // group} KV heads but `attention.num_key_value_heads`={kv_heads}."
                )
            return self.num_attention_heads // group
        if kv_heads is None:
            raise HeterogeneousConfigError(
                f"nemotron-nas layer {layer_idx}: a dense attention needs `attention.n_heads_in_group` or "
                "`attention.num_key_value_heads`."
            )
        return kv_heads

    def _ffn_width(self, layer_idx: int, ffn: dict[str, Any]) -> int:
        ffn_mult, width = ffn.get("ffn_mult"), ffn.get("intermediate_size")
        if ffn_mult is not None:
            if not isinstance(ffn_mult, (int, float)) or ffn_mult <= 0:
                raise HeterogeneousConfigError(
                    f"nemotron-nas layer {layer_idx}: `ffn.ffn_mult`={ffn_mult!r} must be a positive number."
                )
            rounded = ffn_mult_to_intermediate_size(ffn_mult, self.hidden_size)
            if width is not None and width != rounded:
                raise HeterogeneousConfigError(
                    f"nemotron-nas layer {layer_idx}: `ffn.ffn_mult`={ffn_mult} gives an FFN width of {rounded} but "
                    f"`ffn.intermediate_size`={width}."
                )
            return rounded
        if width is None:
            raise HeterogeneousConfigError(
                f"nemotron-nas layer {layer_idx}: a dense FFN needs `ffn.ffn_mult` or `ffn.intermediate_size`."
            )
        return width


def _sub_block_kind(layer_idx: int, name: str, fields: dict[str, Any]) -> str:
    """ "dense", "no_op" or "linear"."""
    no_op, linear = bool(fields.get("no_op")), bool(fields.get("replace_with_linear"))
    if no_op and linear:
        raise HeterogeneousConfigError(
            f"nemotron-nas layer {layer_idx}: `{name}.no_op` and `{name}.replace_with_linear` are both true; a "
            "sub-block is either removed or replaced by a linear map."
        )
    return "no_op" if no_op else "linear" if linear else "dense"


def _refuse_unsupported(layer_idx: int, name: str, fields: dict[str, Any], known: frozenset[str]) -> None:
    for field, value in sorted(fields.items()):
        if field in known or value in (None, False, {}, []):
            continue
        reason = _UNSUPPORTED.get(field)
        what = f"{reason} are not supported" if reason else "this field is unknown to transformers.heterogeneity"
        raise HeterogeneousConfigError(
            f"nemotron-nas layer {layer_idx}: `{name}.{field}`={value!r} is refused: {what}, and ignoring it would "
            "build a different model than the checkpoint's."
        )
