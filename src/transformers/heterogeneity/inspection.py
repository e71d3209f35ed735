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
"""Per-layer summary of a (heterogeneous) config: what each layer holds, what it costs, and the model's totals.

Parameters are counted on the model itself, built on the meta device (no memory is allocated, so a large
checkpoint can be inspected from its `config.json` alone): the counts are exact for every architecture the package
builds, biases and per-head norms included, with no per-architecture formula to keep in sync. Dimensions come from
each layer's config and KV bytes from `kv_cache_bytes`. This module computes and formats; it never prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..configuration_utils import PreTrainedConfig
from ..models.auto import AutoModelForCausalLM
from .cache_utils import LayerKVCacheSize, kv_cache_bytes
from .supported_models import SUPPORTED_ARCHITECTURES, get_config_spec


__all__ = [
    "LayerSummary",
    "ModelSummary",
    "format_comparison",
    "format_layer_table",
    "summarize_config",
]

ATTENTION, MLP, LINEAR, SKIPPED = "attention", "mlp", "linear", "skipped"


@dataclass(frozen=True)
class LayerSummary:
    """One decoder layer. `attention` / `mlp` say what each sub-block is: the stock block, `"linear"` (one
    `hidden x hidden` map) or `"skipped"`. Attention fields are `None` unless the attention is the stock block,
    `intermediate_size` unless the MLP is. `flops_per_token` counts the matrix products (2 per weight), not the
    attention over the context, which adds `4 * heads * head_dim` per cached token."""

    layer_idx: int
    attention: str
    mlp: str
    num_attention_heads: int | None
    num_key_value_heads: int | None
    head_dim: int | None
    intermediate_size: int | None
    num_parameters: int
    kv_bytes_per_token: int
    flops_per_token: int = 0
    window: int | None = None  # sliding window or chunk size of a layer that holds KV; None: full attention


@dataclass(frozen=True)
class ModelSummary:
    """The layers of a causal LM plus what lies outside them (embeddings, final norm, LM head).

    `kv_bytes_per_token` is what one cached token costs in a KV cache of `dtype` (keys and values of every layer that
    holds KV); a layer with a window stops growing at its window.
    """

    model_type: str
    dtype: torch.dtype
    layers: tuple[LayerSummary, ...]
    num_non_layer_parameters: int
    num_non_layer_flops: int = 0  # the LM head

    @property
    def num_layer_parameters(self) -> int:
        return sum(layer.num_parameters for layer in self.layers)

    @property
    def num_parameters(self) -> int:
        return self.num_layer_parameters + self.num_non_layer_parameters

    @property
    def kv_bytes_per_token(self) -> int:
        return sum(layer.kv_bytes_per_token for layer in self.layers)

    @property
    def flops_per_token(self) -> int:
        return sum(layer.flops_per_token for layer in self.layers) + self.num_non_layer_flops


def summarize_config(config: PreTrainedConfig, dtype: torch.dtype = torch.bfloat16) -> ModelSummary:
    """Summarizes every layer of `config` as `XForCausalLM(config)` would build it, and the totals.

    The model is built on the meta device, so its own construction refuses what it would refuse anyway (unknown
    skips, model-level attributes, KV heads that do not divide the attention heads) and no table describes a model
    that cannot exist.

    Args:
        config (`PreTrainedConfig`): a homogeneous or heterogeneous config of a supported architecture.
        dtype (`torch.dtype`, *optional*, defaults to `torch.bfloat16`): element type of the KV cache.

    Raises:
        ValueError: the architecture is not supported.
        HeterogeneousConfigError: a layer's overrides cannot be honoured.
    """
    spec = get_config_spec(config)
    if spec is None:
        raise ValueError(
            f"Cannot summarize model_type '{config.model_type}': it is not a supported architecture "
            f"(supported: {sorted(SUPPORTED_ARCHITECTURES)})."
        )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    decoder_layers = [module for module in model.modules() if isinstance(module, spec.layer_cls)]
    kv_sizes = {size.layer_idx: size for size in kv_cache_bytes(config, dtype)}
    layers = tuple(
        _summarize_layer(layer_idx, layer_config, decoder_layer, kv_sizes.get(layer_idx))
        for layer_idx, (layer_config, decoder_layer) in enumerate(zip(config.per_layer_config, decoder_layers))
    )
    num_parameters = sum(parameter.numel() for parameter in model.parameters())  # tied weights count once
    return ModelSummary(
        model_type=config.model_type,
        dtype=dtype,
        layers=layers,
        num_non_layer_parameters=num_parameters - sum(layer.num_parameters for layer in layers),
        num_non_layer_flops=_matmul_flops(model) - sum(layer.flops_per_token for layer in layers),
    )


def _matmul_flops(module: nn.Module) -> int:
    """FLOPs per token of every `nn.Linear` in `module`: one multiply and one add per weight."""
    return sum(2 * linear.weight.numel() for linear in module.modules() if isinstance(linear, nn.Linear))


def _sub_block_kind(skips: list[str], name: str, stock: str) -> str:
    if name in skips:
        return SKIPPED
    return LINEAR if f"linear_{name}" in skips else stock


def _summarize_layer(
    layer_idx: int, layer_config: PreTrainedConfig, decoder_layer: nn.Module, kv_size: LayerKVCacheSize | None
) -> LayerSummary:
    skips = getattr(layer_config, "skip", [])  # homogeneous configs hand out the global config, without `skip`
    attention = _sub_block_kind(skips, ATTENTION, ATTENTION)
    mlp = _sub_block_kind(skips, MLP, MLP)
    heads = kv_heads = head_dim = intermediate_size = None
    if attention == ATTENTION:
        heads = layer_config.num_attention_heads
        kv_heads = getattr(layer_config, "num_key_value_heads", None) or heads
        head_dim = getattr(layer_config, "head_dim", None) or layer_config.hidden_size // heads
    if mlp == MLP:
        intermediate_size = layer_config.intermediate_size
    return LayerSummary(
        layer_idx=layer_idx,
        attention=attention,
        mlp=mlp,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        num_parameters=sum(parameter.numel() for parameter in decoder_layer.parameters()),
        kv_bytes_per_token=0 if kv_size is None else kv_size.bytes_per_token,
        flops_per_token=_matmul_flops(decoder_layer),
        window=None if kv_size is None else kv_size.window,
    )


def _format_window(layer: LayerSummary) -> str:
    """A layer's attention span: its window, `full`, or `-` when it holds no KV."""
    if not layer.kv_bytes_per_token:
        return "-"
    return "full" if layer.window is None else f"{layer.window:,}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _format_number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _format_table(header: list[str], rows: list[list[str]], left_aligned: int = 0) -> str:
    """Aligns columns: the first `left_aligned` columns to the left (names), the others to the right (numbers)."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < left_aligned else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_layer_table(summary: ModelSummary) -> str:
    """Renders one row per layer, a row of layer totals, and the model's total parameters.

    A skipped sub-block shows `-` for its dimensions; a layer without KV shows 0 KV bytes.
    """
    header = [
        "layer",
        "attention",
        "mlp",
        "heads",
        "kv_heads",
        "head_dim",
        "window",
        "intermediate",
        "parameters",
        f"KV bytes/token ({_dtype_name(summary.dtype)})",
        "FLOPs/token",
    ]
    rows = [
        [str(layer.layer_idx), layer.attention, layer.mlp]
        + [_format_number(value) for value in (layer.num_attention_heads, layer.num_key_value_heads, layer.head_dim)]
        + [_format_window(layer)]
        + [
            _format_number(value)
            for value in (
                layer.intermediate_size,
                layer.num_parameters,
                layer.kv_bytes_per_token,
                layer.flops_per_token,
            )
        ]
        for layer in summary.layers
    ]
    totals = [
        _format_number(summary.num_layer_parameters),
        _format_number(summary.kv_bytes_per_token),
        _format_number(summary.flops_per_token - summary.num_non_layer_flops),
    ]
    rows.append(["total"] + [""] * (len(header) - 4) + totals)
    table = _format_table(header, rows, left_aligned=3)
    return (
        f"{table}\n"
        f"Embeddings, final norm and LM head: {_format_number(summary.num_non_layer_parameters)} parameters, "
        f"{_format_number(summary.num_non_layer_flops)} FLOPs/token; model total: "
        f"{_format_number(summary.num_parameters)} parameters, {_format_number(summary.flops_per_token)} FLOPs/token "
        "(matrix products; attention over the context adds 4 x heads x head_dim per cached token)."
    )


def format_comparison(
    reference: ModelSummary, summary: ModelSummary, reference_name: str = "reference", name: str = "model"
) -> str:
    """Renders the totals of `summary` next to those of `reference`, with the saving as a percentage of the
    reference (negative when `summary` is larger)."""
    if reference.dtype != summary.dtype:
        raise ValueError(
            f"Cannot compare KV bytes of a {_dtype_name(reference.dtype)} cache with a {_dtype_name(summary.dtype)} "
            "cache; summarize both configs with the same dtype."
        )
    rows = []
    for label, before, after in (
        ("parameters", reference.num_parameters, summary.num_parameters),
        ("layer parameters", reference.num_layer_parameters, summary.num_layer_parameters),
        (f"KV bytes/token ({_dtype_name(summary.dtype)})", reference.kv_bytes_per_token, summary.kv_bytes_per_token),
    ):
        saving = f"{100 * (before - after) / before:.1f}%" if before else "-"
        rows.append([label, _format_number(before), _format_number(after), saving])
    return _format_table(["", reference_name, name, "saving"], rows, left_aligned=1)
