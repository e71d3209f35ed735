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
Llama-3.1-Nemotron-Ultra-253B, found by neural architecture search from Llama 3, and the DeciLM checkpoints NVIDIA
Model-Optimizer's Puzzletron writes for models users compress themselves.

Their `config.json` gives one `block_configs` entry per layer (`{"attention": {...}, "ffn": {...}}`) and leaves the
global `intermediate_size` and `num_key_value_heads` null (the releases) or out (Model-Optimizer). Three block schemas
exist: the releases' (`n_heads_in_group`, `ffn_mult`, sink / window fields), and Model-Optimizer's of Nov 2025
(`modelopt/torch/_compress/decilm/deci_lm_hf_code/block_config.py`: `n_heads_in_group`, sink / window fields,
`ffn.intermediate_size`, `gated`, `hidden_act`, `moe`, `mamba`, `llama4`, `weights_precision`, `parallel_blocks`) and
Jan 2026 (`modelopt/torch/puzzletron/block_config.py`: `attention.num_key_value_heads` instead of `n_heads_in_group`
and the sink / window fields, no `gated` / `hidden_act`). Model-Optimizer writes them with `dataclasses.asdict`, so
every field is present, most of them null or at their default. Each entry maps onto the per-layer vocabulary:

| block field | per-layer value |
|---|---|
| `attention.n_heads_in_group` (or `attention.num_key_value_heads`) | `num_key_value_heads = num_attention_heads // n` |
| `attention.no_op` / `attention.replace_with_linear` | `"skip": ["attention"]` / `["linear_attention"]` |
| `ffn.ffn_mult` (or `ffn.intermediate_size`) | `intermediate_size`, rounded as below |
| `ffn.hidden_act` | `hidden_act` |
| `ffn.no_op` / `ffn.replace_with_linear` | `"skip": ["mlp"]` / `["linear_mlp"]` |

A null field, or one at its default (`weights_precision: "bf16"`, `gated: true`, `unshifted_sink: false`,
`parallel_blocks: null`, ...), changes nothing and is accepted. Anything else (`sparsify`, sink or windowed attention,
MoE, Mamba or Llama-4 sub-blocks, non-gated FFNs, other weight precisions, parallel blocks, unknown keys) is refused
with an error naming the layer and the field: building a dense Llama layer instead would be silently wrong. The
top-level fields of Model-Optimizer's `DeciLMConfig` are honoured or refused by name in the same way (`_TOP_LEVEL`).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ....models.llama.configuration_llama import LlamaConfig
from ...configuration_utils import HeterogeneousConfigError
from ..format_utils import CheckpointFormatConfigMixin, most_common


__all__ = ["NemotronNasConfig", "ffn_mult_to_intermediate_size"]

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

# Top-level fields of Model-Optimizer's `DeciLMConfig` (`deci_lm_hf_code/configuration_decilm.py`), which stock
# LlamaConfig does not know: field -> (the values a stock Llama model honours, why others are refused), or a reason
# why any value changes nothing. `position_embedding_type` other than "rope": "rope_llama4" and "mistral_yarn" rotate
# non-neox style (vLLM's and TensorRT-LLM's readers), "none" has no positions at all.
_TOP_LEVEL = {
    "position_embedding_type": (("rope", None), "only rope (Llama's rotary embedding) is built"),
    "o_proj_bias": ((False, None), "a bias on `o_proj` alone is not built (`attention_bias` biases q, k, v and o)"),
    "output_router_logits": ((False, None), "the model has no routers (MoE FFNs are refused)"),
}
# Top-level fields of the same writer that change nothing a stock Llama model computes, whatever their value:
# `llama4_attn_implementation` (the kernel of Llama-4 attention blocks, which are refused), `block_return_only_hidden_
# states` (what the remote code's blocks return), `router_aux_loss_coef` / `router_z_loss_coef` (training-loss weights
# of MoE routers; the model has none). `head_dim` is a LlamaConfig field, honoured.


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

    def __post_init__(self, **kwargs):
        # Unknown to LlamaConfig, these arrive here rather than as fields; they stay attributes (written back on save).
        for name, (honoured, why) in _TOP_LEVEL.items():
            if kwargs.get(name) not in honoured:
                raise HeterogeneousConfigError(
                    f"nemotron-nas: `{name}`={kwargs[name]!r} is refused: {why}; ignoring it would build a different "
                    "model than the checkpoint's."
                )
        super().__post_init__(**kwargs)

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
        for name, why in _BLOCK_UNSUPPORTED.items():
            if block.get(name) not in (None, []):
                raise HeterogeneousConfigError(
                    f"nemotron-nas layer {layer_idx}: `{name}`={block[name]!r} is refused: {why}, and ignoring it "
                    "would build a different model than the checkpoint's."
                )
        unknown = sorted(set(block) - {"attention", "ffn", *_BLOCK_UNSUPPORTED})
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
            if ffn.get("hidden_act") is not None:
                layer["hidden_act"] = ffn["hidden_act"]
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
        if field in known or value is None:
            continue
        if field in _DEFAULTS:  # `gated: false` is not a default, though false
            if value == _DEFAULTS[field]:
                continue
        elif value in (False, {}, []):
            continue
        what = _UNSUPPORTED.get(field, "this field is unknown to transformers.heterogeneity")
        raise HeterogeneousConfigError(
            f"nemotron-nas layer {layer_idx}: `{name}.{field}`={value!r} is refused: {what}, and ignoring it would "
            "build a different model than the checkpoint's."
        )
