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
"""A Llama-family model written as a Nemotron-NAS (DeciLM) checkpoint, as NVIDIA's releases write it.

Each layer becomes one `block_configs` entry with every field of the released schema
(Llama-3.1-Nemotron-51B / Super-49B / Ultra-253B `config.json`; fixture in `tests/heterogeneity/checkpoints.py`):

| per-layer value | block field |
|---|---|
| `num_key_value_heads` | `attention.n_heads_in_group = num_attention_heads // num_key_value_heads` |
| `"skip": ["attention"]` / `["attention_replaced_by_linear"]` | `attention.no_op` / `attention.replace_with_linear` (`n_heads_in_group` null) |
| `intermediate_size` | `ffn.ffn_mult`, the multiplier the readers turn back into exactly this width (below) |
| `"skip": ["mlp"]` / `["mlp_replaced_by_linear"]` | `ffn.no_op` / `ffn.replace_with_linear` (`ffn_mult` null) |

Every reader (this package's loader, vLLM, SGLang, TensorRT-LLM, llama.cpp) computes a layer's FFN width as
`round_up(int(2 * ffn_mult * hidden_size / 3), 256)`, so only positive multiples of 256 are expressible. A width that
is not one is padded up to the next multiple of 256 with zero channels (zero `gate_proj` / `up_proj` rows and
`down_proj` columns): `silu(0) * 0 = 0` and a zero column adds nothing, so the model computes the same function (up
to the order of float additions), and the export says which layers were padded. Per-layer head size, attention heads,
activation, norm epsilon, rope or window have no field in the format and are refused, as are Llama-family models whose
layers are not Llama's (Qwen2's q/k/v-only biases, Qwen3's QK norms) and a Mistral window.

The global `intermediate_size` and `num_key_value_heads` are null and `auto_map` points at the release's remote code,
as released: vLLM, SGLang and TensorRT-LLM read `block_configs` as the objects that code builds
(`block_config.attention.no_op`), so they need the release's `configuration_decilm.py` / `block_config.py` beside
`config.json` (not redistributed here); this package and llama.cpp's converter read the file itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch

from ...models.llama.configuration_llama import LlamaConfig
from ..checkpoint_formats.decilm_blocks import ffn_mult_to_intermediate_size
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


__all__ = ["ffn_mult_for_width", "plan_nemotron_nas"]

FAMILY = "nemotron-nas"
# The released `auto_map` (Llama-3.1-Nemotron-51B-Instruct, Llama-3.3-Nemotron-Super-49B-v1 `config.json`).
AUTO_MAP = {
    "AutoConfig": "configuration_decilm.DeciLMConfig",
    "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
}
# Canonical model types whose decoder layers are Llama's exactly (Mistral's too, without a window).
SOURCE_MODEL_TYPES = ("llama", "mistral")
_SKIPS = {
    "attention": ("attention", "no_op"),
    "attention_replaced_by_linear": ("attention", "linear"),
    "mlp": ("ffn", "no_op"),
    "mlp_replaced_by_linear": ("ffn", "linear"),
}
_GATED_MLP = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$")


def ffn_mult_for_width(width: int, hidden_size: int) -> float:
    """The `ffn_mult` that the readers' formula turns into `width` (a positive multiple of 256).

    The exact ratio `3 * width / (2 * hidden_size)` when it is a short decimal, as the releases write theirs (hidden
    8192: 14336 -> 2.625); otherwise the shortest decimal that gives `width`. Either is checked against the formula.
    """
    if width <= 0 or width % 256:
        raise ValueError(f"FFN width {width} is not a positive multiple of 256; pad it first.")
    exact = 3 * width / (2 * hidden_size)
    candidates = [round(exact, 6)]
    # int(2 * m * hidden / 3) must land in (width - 256, width]: m in [3 (width - 255) / 2h, 3 (width + 1) / 2h).
    low, high = 3 * (width - 255) / (2 * hidden_size), 3 * (width + 1) / (2 * hidden_size)
    for digits in range(16):
        scale = 10**digits
        candidate = -(-int(low * scale * 10) // 10) / scale  # low, rounded up at `digits` decimals
        if candidate < high:
            candidates.append(candidate)
    for candidate in candidates:
        if candidate > 0 and ffn_mult_to_intermediate_size(candidate, hidden_size) == width:
            return candidate
    raise ValueError(f"No ffn_mult gives an FFN width of {width} at hidden size {hidden_size}.")  # not reachable


def plan_nemotron_nas(config: Any) -> ExportPlan:
    """The Nemotron-NAS checkpoint of a canonical Llama-family config; refuses what the format cannot express."""
    check_source_type(
        FAMILY, config, SOURCE_MODEL_TYPES, "its blocks are Llama decoder layers (no q/k/v-only biases, no QK norm)"
    )
    overrides = layer_overrides(config)
    check_layer_fields(
        FAMILY,
        overrides,
        ("intermediate_size", "num_key_value_heads"),
        lambda name: (
            f"a {FAMILY} block describes a layer by its KV heads (`attention.n_heads_in_group`) and FFN width "
            f"(`ffn.ffn_mult`) only: `{name}` has one value for all layers in the format"
        ),
    )
    values = _global_values(config)
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    blocks, expected, padded, kinds = [], {}, {}, set()
    kv_heads_seen = set()
    for layer_idx in range(config.num_hidden_layers):
        layer = config.per_layer_config[layer_idx]
        kind = _sub_block_kinds(layer_idx, overrides.get(layer_idx, {}).get("skip", []))
        attention = {"n_heads_in_group": None, "no_op": kind["attention"] == "no_op"}
        attention["replace_with_linear"] = kind["attention"] == "linear"
        ffn = {"ffn_mult": None, "no_op": kind["ffn"] == "no_op", "replace_with_linear": kind["ffn"] == "linear"}
        expected[layer_idx] = {"skip": sorted(overrides.get(layer_idx, {}).get("skip", []))}
        if kind["attention"] == "dense":
            kv_heads = layer.num_key_value_heads
            if heads % kv_heads:
                raise refuse(FAMILY, layer_idx, "num_key_value_heads", kv_heads, f"it does not divide {heads} heads")
            attention["n_heads_in_group"] = heads // kv_heads
            expected[layer_idx]["num_key_value_heads"] = kv_heads
            kv_heads_seen.add(kv_heads)
        if kind["ffn"] == "dense":
            width = layer.intermediate_size
            rounded = -(-width // 256) * 256
            if rounded != width:
                padded[layer_idx] = (width, rounded)
            ffn["ffn_mult"] = ffn_mult_for_width(rounded, hidden)
            expected[layer_idx]["intermediate_size"] = rounded
        kinds.update(_engine_kinds(kind))
        blocks.append({"attention": _released_attention(attention), "ffn": _released_ffn(ffn)})
    if len(kv_heads_seen) > 1:
        kinds.add("per_layer_kv_heads")
    if kind["ffn"] == "no_op":  # the last layer's
        kinds.add("last_layer_ffn_no_op")
    values.update(
        {
            "architectures": ["DeciLMForCausalLM"],
            "auto_map": dict(AUTO_MAP),
            "model_type": FAMILY,
            "block_configs": blocks,
            "intermediate_size": None,
            "num_key_value_heads": None,
        }
    )
    notes = [
        f"layer {layer_idx}: FFN width {width} is not a multiple of 256, which `ffn_mult` cannot express; padded to "
        f"{rounded} with zero channels (zero gate/up rows and down columns: the same function, up to float rounding)"
        for layer_idx, (width, rounded) in sorted(padded.items())
    ]
    return ExportPlan(FAMILY, values, _padding_transform(padded), kinds, notes, expected)


def _global_values(config: Any) -> dict[str, Any]:
    """The Llama globals as the releases write them; refuses a global the format has no field for."""
    values = release_conventions(config.to_dict())
    for key in ("per_layer_config", "architectures", "model_type", "transformers_version"):
        values.pop(key, None)
    defaults = release_conventions(LlamaConfig().to_dict())
    handled = {"intermediate_size", "num_key_value_heads", "rope_theta", "rope_scaling", "torch_dtype", "pad_token_id"}
    for key, value in sorted(values.items()):
        if key in handled or key == "head_dim":
            continue
        at_default = value == defaults[key] if key in defaults else value in (None, False, [], {})
        if key not in defaults and not at_default:
            raise ExportError(
                f"Cannot export to {FAMILY}: `{key}`={value!r} (a {config.model_type} setting for all layers) has no "
                f"field in the format, whose layers are Llama's. Nothing was written."
            )
        if key in GENERIC_KEYS and at_default:
            del values[key]
    for key in [key for key in values if key not in defaults and key not in handled]:
        del values[key]  # Mistral's null window and the like: nothing to write
    if values.get("head_dim") == values["hidden_size"] // values["num_attention_heads"]:
        del values["head_dim"]  # the releases derive it; Model-Optimizer writes it when it differs
    if values.get("pad_token_id") is None:
        values.pop("pad_token_id", None)
    return values


def _sub_block_kinds(layer_idx: int, skips: list[str]) -> dict[str, str]:
    kind = {"attention": "dense", "ffn": "dense"}
    for skip in skips:
        if skip not in _SKIPS:
            raise refuse(FAMILY, layer_idx, "skip", skips, f"`{skip}` is not a {FAMILY} sub-block kind")
        slot, what = _SKIPS[skip]
        if kind[slot] != "dense":
            raise refuse(FAMILY, layer_idx, "skip", skips, f"its {slot} is both no-op and linear")
        kind[slot] = what
    return kind


def _engine_kinds(kind: dict[str, str]) -> set[str]:
    """The layer's sub-block kinds, in the names of `engines.SUB_BLOCK_KINDS`."""
    kinds = {{"dense": "attention", "no_op": "attention_no_op", "linear": "attention_linear"}[kind["attention"]]}
    if kind["ffn"] == "no_op":
        kinds.add("ffn_no_op_after_attention" if kind["attention"] != "no_op" else "ffn_no_op")
    else:
        kinds.add({"dense": "ffn", "linear": "ffn_linear"}[kind["ffn"]])
    return kinds


def _released_attention(fields: dict[str, Any]) -> dict[str, Any]:
    """Every field of the released attention entry, the unused ones at the releases' values."""
    return {
        "n_heads_in_group": fields["n_heads_in_group"],
        "no_op": fields["no_op"],
        "num_sink_tokens": None,
        "replace_with_linear": fields["replace_with_linear"],
        "sparsify": None,
        "unshifted_sink": False,
        "use_prefill_window_in_sink_attention": False,
        "window_length": None,
    }


def _released_ffn(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "ffn_mult": fields["ffn_mult"],
        "no_op": fields["no_op"],
        "replace_with_linear": fields["replace_with_linear"],
        "sparsify": None,
    }


def _padding_transform(padded: dict[int, tuple[int, int]]):
    """Writes tensors as they are, except the gated-MLP tensors of padded layers, which get zero channels."""

    def transform(name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        match = _GATED_MLP.match(name)
        if match is None or int(match[1]) not in padded:
            yield name, tensor
            return
        width, rounded = padded[int(match[1])]
        projection, kind = match[2], match[3]
        if projection == "down_proj" and kind == "bias":
            yield name, tensor  # [hidden]: not a channel dimension
            return
        dim = 1 if projection == "down_proj" else 0  # down [hidden, width]; gate / up [width, hidden], bias [width]
        if tensor.shape[dim] != width:
            raise ExportError(f"{name} has shape {list(tensor.shape)}; its layer's FFN width is {width}.")
        shape = list(tensor.shape)
        shape[dim] = rounded - width
        yield name, torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)

    return transform
