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
"""The DeciLM block schema shared by Nemotron-NAS checkpoints and NVIDIA Model-Optimizer's outputs: one
`{"attention": {...}, "ffn": {...}}` entry per layer of a Llama-family model, translated into that layer's
`per_layer_config` values. The schemas and their sources are described in `nemotron_nas/configuration_nemotron_nas.py`;
AnyModel outputs of Llama-family models (`anymodel.py`) use the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..configuration_utils import HeterogeneousConfigError


__all__ = ["DeciLMBlocks", "ffn_mult_to_intermediate_size", "refuse_non_default_fields", "sub_block_kind"]

# Block fields this package reads. Every other field must be null, false, empty or at its default (`_DEFAULTS`).
_ATTENTION_FIELDS = frozenset({"n_heads_in_group", "num_key_value_heads", "no_op", "replace_with_linear"})
_FFN_FIELDS = frozenset({"ffn_mult", "intermediate_size", "hidden_act", "no_op", "replace_with_linear"})
# Non-null defaults of Model-Optimizer's block dataclasses (both schemas): `SubblockConfig.weights_precision = "bf16"`,
# `FFNConfig.gated = True` (Nov 2025). A field at its default is written by `dataclasses.asdict` and changes nothing.
_DEFAULTS = {"weights_precision": "bf16", "gated": True}
# Fields of the released formats that change what a block computes, with what they would need.
_UNSUPPORTED = {
    "sparsify": "sparsified weights are not supported",
    "window_length": "windowed attention is not supported",
    "num_sink_tokens": "sink attention is not supported",
    "use_prefill_window_in_sink_attention": "sink attention is not supported",
    "unshifted_sink": "sink attention is not supported",
    "moe": "mixture-of-experts FFNs are not built by stock Llama layers",
    "mamba": "Mamba mixers are not built by stock Llama layers",
    "llama4": "Llama-4 attention (chunked attention, QK norm, temperature tuning) is not built by stock Llama layers",
    "gated": "non-gated FFNs (up, activation, down) are not built by stock Llama layers, whose MLP is gated",
    "weights_precision": "only bf16 weights (the default) are read",
}
# Block-level fields besides `attention` and `ffn`: null means none.
_BLOCK_UNSUPPORTED = {"parallel_blocks": "parallel blocks are not built by stock Llama layers"}


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """FFN width of a block: `2 * ffn_mult * hidden_size / 3`, truncated, then rounded up to a multiple of 256.

    This is the rule of the released checkpoints (their weights have these shapes): hidden 8192 with `ffn_mult`
    2.625 gives 14336, with 0.4375 gives 2560.
    """
    width = int(2 * ffn_mult * hidden_size / 3)
    return -(-width // 256) * 256


@dataclass(frozen=True)
class DeciLMBlocks:
    """Translates the blocks of one model. `family` names the format in error messages."""

    family: str
    num_attention_heads: int
    hidden_size: int

    def translate(self, layer_idx: int, block: dict[str, Any]) -> dict[str, Any]:
        """The per-layer values of one block; refuses what stock Llama layers cannot build."""
        for name, why in _BLOCK_UNSUPPORTED.items():
            if block.get(name) not in (None, []):
                raise HeterogeneousConfigError(
                    f"{self.family} layer {layer_idx}: `{name}`={block[name]!r} is refused: {why}, and ignoring it "
                    "would build a different model than the checkpoint's."
                )
        unknown = sorted(set(block) - {"attention", "ffn", *_BLOCK_UNSUPPORTED})
        if unknown:
            raise HeterogeneousConfigError(
                f"{self.family} layer {layer_idx}: unknown block field `{unknown[0]}`; a block holds `attention` and "
                "`ffn`."
            )
        attention = block.get("attention") or {}
        ffn = block.get("ffn") or {}
        refuse_non_default_fields(self.family, layer_idx, "attention", attention, _ATTENTION_FIELDS)
        refuse_non_default_fields(self.family, layer_idx, "ffn", ffn, _FFN_FIELDS)
        layer: dict[str, Any] = {}
        skips = []
        attention_kind = sub_block_kind(self.family, layer_idx, "attention", attention)
        if attention_kind == "dense":
            layer["num_key_value_heads"] = self._kv_heads(layer_idx, attention)
        else:
            skips.append({"no_op": "attention", "linear": "attention_replaced_by_linear"}[attention_kind])
        ffn_kind = sub_block_kind(self.family, layer_idx, "ffn", ffn)
        if ffn_kind == "dense":
            layer["intermediate_size"] = self._ffn_width(layer_idx, ffn)
            if ffn.get("hidden_act") is not None:
                layer["hidden_act"] = ffn["hidden_act"]
        else:
            skips.append({"no_op": "mlp", "linear": "mlp_replaced_by_linear"}[ffn_kind])
        if skips:
            layer["skip"] = skips
        return layer

    def _kv_heads(self, layer_idx: int, attention: dict[str, Any]) -> int:
        group, kv_heads = attention.get("n_heads_in_group"), attention.get("num_key_value_heads")
        if group is not None:
            if not isinstance(group, int) or group <= 0 or self.num_attention_heads % group:
                raise HeterogeneousConfigError(
                    f"{self.family} layer {layer_idx}: `attention.n_heads_in_group`={group!r} must be a positive "
                    f"integer dividing `num_attention_heads`={self.num_attention_heads}."
                )
            if kv_heads is not None and kv_heads != self.num_attention_heads // group:
                raise HeterogeneousConfigError(
                    f"{self.family} layer {layer_idx}: `attention.n_heads_in_group`={group} gives "
                    f"{self.num_attention_heads // group} KV heads but `attention.num_key_value_heads`={kv_heads}."
                )
            return self.num_attention_heads // group
        if kv_heads is None:
            raise HeterogeneousConfigError(
                f"{self.family} layer {layer_idx}: a dense attention needs `attention.n_heads_in_group` or "
                "`attention.num_key_value_heads`."
            )
        return kv_heads

    def _ffn_width(self, layer_idx: int, ffn: dict[str, Any]) -> int:
        ffn_mult, width = ffn.get("ffn_mult"), ffn.get("intermediate_size")
        if ffn_mult is not None:
            if not isinstance(ffn_mult, (int, float)) or ffn_mult <= 0:
                raise HeterogeneousConfigError(
                    f"{self.family} layer {layer_idx}: `ffn.ffn_mult`={ffn_mult!r} must be a positive number."
                )
            rounded = ffn_mult_to_intermediate_size(ffn_mult, self.hidden_size)
            if width is not None and width != rounded:
                raise HeterogeneousConfigError(
                    f"{self.family} layer {layer_idx}: `ffn.ffn_mult`={ffn_mult} gives an FFN width of {rounded} but "
                    f"`ffn.intermediate_size`={width}."
                )
            return rounded
        if width is None:
            raise HeterogeneousConfigError(
                f"{self.family} layer {layer_idx}: a dense FFN needs `ffn.ffn_mult` or `ffn.intermediate_size`."
            )
        return width


def sub_block_kind(family: str, layer_idx: int, name: str, fields: dict[str, Any]) -> str:
    """ "dense", "no_op" or "linear"."""
    no_op, linear = bool(fields.get("no_op")), bool(fields.get("replace_with_linear"))
    if no_op and linear:
        raise HeterogeneousConfigError(
            f"{family} layer {layer_idx}: `{name}.no_op` and `{name}.replace_with_linear` are both true; a "
            "sub-block is either removed or replaced by a linear map."
        )
    return "no_op" if no_op else "linear" if linear else "dense"


def refuse_non_default_fields(
    family: str, layer_idx: int, name: str, fields: dict[str, Any], known: frozenset[str]
) -> None:
    for field, value in sorted(fields.items()):
        if field in known or value is None:
            continue
        if field in _DEFAULTS:  # `gated: false` is not a default, though false
            if value == _DEFAULTS[field]:
                continue
        elif value in (False, {}, []):
            continue
        what = _UNSUPPORTED.get(field, "this field is unknown to transformers.heterogeneity")
        raise HeterogeneousConfigError(
            f"{family} layer {layer_idx}: `{name}.{field}`={value!r} is refused: {what}, and ignoring it would "
            "build a different model than the checkpoint's."
        )
