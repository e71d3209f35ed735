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
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ..configuration_utils import PreTrainedConfig
from ..models.auto import AutoModelForCausalLM
from .backends.selection import TRANSFORMER_ENGINE, LayerBackend, parse_decoder_backend, plan_layer_backends
from .cache_utils import LayerKVCacheSize, kv_cache_bytes
from .linear_utils import LinearSubBlock
from .skip_utils import SkippedModule
from .supported_models import SUPPORTED_ARCHITECTURES, get_config_spec


__all__ = [
    "LayerSummary",
    "ModelSummary",
    "checkpoint_dtype",
    "format_comparison",
    "format_layer_table",
    "summarize_config",
]

LINEAR, SKIPPED = "linear", "skipped"

# What a sub-block is, from the class of the module in its slot (first match wins): names that upstream classes share
# across architectures, so that no architecture needs an entry here.
_KIND_OF_CLASS_NAME = (
    ("mamba", "mamba"),
    ("attention", "attention"),
    ("moe", "moe"),
    ("expert", "moe"),
    ("mlp", "mlp"),
)


@dataclass(frozen=True)
class LayerSummary:
    """One decoder layer.

    `blocks` gives, for each sub-block slot of the architecture (its skip names: `attention` and `mlp`, or NemotronH's
    `mixer`), what the slot holds: `attention`, `mlp`, `moe`, `mamba`, `linear` (one `hidden x hidden` map) or
    `skipped`. Attention dimensions are `None` for a layer that holds no KV. `intermediate_size` is the feed-forward
    width (of each expert, for a MoE), `None` without one. `flops_per_token` counts the matrix products (2 per weight;
    for experts, only the `experts_per_token` that run), not the attention over the context, which adds
    `4 * heads * head_dim` per cached token.
    """

    layer_idx: int
    blocks: tuple[tuple[str, str], ...]
    num_attention_heads: int | None
    num_key_value_heads: int | None
    head_dim: int | None
    intermediate_size: int | None
    num_parameters: int
    kv_bytes_per_token: int
    flops_per_token: int = 0
    window: int | None = None  # sliding window or chunk size of a layer that holds KV; None: full attention
    num_experts: int | None = None
    experts_per_token: int | None = None
    backend: str = "stock"  # decoder backend that would run the layer (`backends.plan_layer_backends`)

    def kind(self, slot: str) -> str:
        """What the sub-block slot `slot` holds (see the class docstring)."""
        return dict(self.blocks)[slot]


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
    decoder_backend: Any = None  # the backend choice the summary was made for (None: stock layers only)

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


def unquantized(config: PreTrainedConfig) -> PreTrainedConfig:
    """`config` without its `quantization_config`: the model as it is built when the checkpoint is dequantized on
    load. Quantizers build their modules only inside `from_pretrained`, and MXFP4 refuses per-layer expert shapes
    (see `modeling_utils.py`), so a table or a tensor check of a quantized checkpoint describes its dequantized form."""
    if getattr(config, "quantization_config", None) is None:
        return config
    values = {name: value for name, value in config.to_dict().items() if name != "quantization_config"}
    return type(config).from_dict(values)


def summarize_config(
    config: PreTrainedConfig, dtype: torch.dtype = torch.bfloat16, decoder_backend: Any = None
) -> ModelSummary:
    """Summarizes every layer of `config` as `XForCausalLM(config)` would build it, and the totals.

    The model is built on the meta device, so its own construction refuses what it would refuse anyway (unknown
    skips, model-level attributes, KV heads that do not divide the attention heads) and no table describes a model
    that cannot exist. Counts are those of the stock layers (the checkpoint's); `decoder_backend` adds which backend
    would run each layer, planned from the config alone, so it needs no TransformerEngine.

    Args:
        config (`PreTrainedConfig`): a homogeneous or heterogeneous config of a supported architecture.
        dtype (`torch.dtype`, *optional*, defaults to `torch.bfloat16`): element type of the KV cache.
        decoder_backend (*optional*): a `decoder_backend` value (`backends/selection.py`).

    Raises:
        ValueError: the architecture is not supported.
        HeterogeneousConfigError: a layer's overrides cannot be honoured, or the backend choice cannot be.
    """
    backends = plan_layer_backends(config, parse_decoder_backend(decoder_backend))
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
    slots = _sub_block_slots(spec.skip_descriptors)
    layers = tuple(
        _summarize_layer(layer_idx, layer_config, decoder_layer, kv_sizes.get(layer_idx), slots, backends[layer_idx])
        for layer_idx, (layer_config, decoder_layer) in enumerate(zip(config.per_layer_config, decoder_layers))
    )
    num_parameters = sum(parameter.numel() for parameter in model.parameters())  # tied weights count once
    return ModelSummary(
        model_type=config.model_type,
        dtype=dtype,
        layers=layers,
        num_non_layer_parameters=num_parameters - sum(layer.num_parameters for layer in layers),
        num_non_layer_flops=_matmul_flops(model) - sum(_matmul_flops(layer) for layer in decoder_layers),
        decoder_backend=decoder_backend,
    )


# safetensors' names of the floating-point element types (its header format), as torch dtypes.
_SAFETENSORS_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def checkpoint_dtype(config: PreTrainedConfig, checkpoint_dir: Path | None = None) -> tuple[torch.dtype, str]:
    """The dtype `from_pretrained` loads the checkpoint in by default, and where it comes from.

    Upstream's default (`dtype="auto"`, transformers 5.23 `modeling_utils._get_dtype`) is the config's `dtype`, else
    the type of the first floating-point tensor of the first weight file, which is read here from the safetensors
    header alone; a config without weights falls back to torch's default dtype. A KV cache is kept in the model's
    dtype, so this is also the dtype of its bytes.
    """
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype):
        return dtype, "the dtype in config.json"
    for weight_file in sorted(checkpoint_dir.glob("*.safetensors")) if checkpoint_dir is not None else []:
        with safe_open(weight_file, "pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                tensor_dtype = _SAFETENSORS_FLOAT_DTYPES.get(weights.get_slice(name).get_dtype())
                if tensor_dtype is not None:
                    return tensor_dtype, f"the dtype of the weights in {weight_file.name}"
    return torch.get_default_dtype(), "torch's default dtype: neither config.json nor the weights give one"


def _matmul_flops(module: nn.Module, experts_per_token: int | None = None) -> int:
    """FLOPs per token of the matrix products in `module`: one multiply and one add per weight of every `nn.Linear`,
    and of the experts that run for a token (a module with `num_experts`, holding one weight per expert)."""
    flops = sum(2 * child.weight.numel() for child in module.modules() if isinstance(child, nn.Linear))
    for experts in _expert_modules(module):
        expert_weights = sum(p.numel() for p in experts.parameters(recurse=False) if p.dim() == 3)
        flops += 2 * expert_weights * (experts_per_token or 0) // experts.num_experts
    return flops


def _expert_modules(module: nn.Module) -> list[nn.Module]:
    """The modules holding the weights of all experts at once (one 3D tensor per projection, experts first)."""
    return [
        child
        for child in module.modules()
        if isinstance(getattr(child, "num_experts", None), int)
        and any(p.dim() == 3 for p in child.parameters(recurse=False))
    ]


def _slot_kind(module: nn.Module) -> str:
    if isinstance(module, LinearSubBlock):
        return LINEAR
    if isinstance(module, SkippedModule):
        return SKIPPED
    if _expert_modules(module):
        return "moe"  # whatever the class is called (GPT-OSS's MoE block is `GptOssMLP`)
    name = type(module).__name__.lower()
    return next((kind for key, kind in _KIND_OF_CLASS_NAME if key in name), name)


def _feed_forward(module: nn.Module, kind: str) -> tuple[int | None, int | None]:
    """(width, number of experts) of a feed-forward sub-block, read from its modules."""
    if kind == "mlp":
        first_linear = next((child for child in module.modules() if isinstance(child, nn.Linear)), None)
        return (None if first_linear is None else first_linear.out_features), None
    experts = next(iter(_expert_modules(module)), None)
    if kind != "moe" or experts is None:
        return None, None
    width = getattr(experts, "intermediate_size", None) or getattr(experts, "intermediate_dim", None)
    return width, experts.num_experts


def _summarize_layer(
    layer_idx: int,
    layer_config: PreTrainedConfig,
    decoder_layer: nn.Module,
    kv_size: LayerKVCacheSize | None,
    slots: dict[str, str],
    backend: LayerBackend,
) -> LayerSummary:
    blocks = tuple((slot, _slot_kind(decoder_layer.get_submodule(path))) for slot, path in slots.items())
    intermediate_size = num_experts = experts_per_token = None
    for slot, kind in blocks:
        if kind in ("mlp", "moe"):
            intermediate_size, num_experts = _feed_forward(decoder_layer.get_submodule(slots[slot]), kind)
    if num_experts is not None:
        experts_per_token = getattr(layer_config, "num_experts_per_tok", None)
    heads = None if kv_size is None else layer_config.num_attention_heads
    return LayerSummary(
        layer_idx=layer_idx,
        blocks=blocks,
        num_attention_heads=heads,
        num_key_value_heads=None if kv_size is None else kv_size.num_key_value_heads,
        head_dim=None if kv_size is None else kv_size.head_dim,
        intermediate_size=intermediate_size,
        num_parameters=sum(parameter.numel() for parameter in decoder_layer.parameters()),
        kv_bytes_per_token=0 if kv_size is None else kv_size.bytes_per_token,
        flops_per_token=_matmul_flops(decoder_layer, experts_per_token),
        window=None if kv_size is None else kv_size.window,
        num_experts=num_experts,
        experts_per_token=experts_per_token,
        backend=_format_backend(backend),
    )


def _format_backend(backend: LayerBackend) -> str:
    """`transformer_engine`, `transformer_engine (fp8)`, or the backend with why FP8 does not run it."""
    if backend.fp8:
        return f"{backend.backend} (fp8)"
    if backend.backend == TRANSFORMER_ENGINE and backend.note:
        return f"{backend.backend} ({backend.note})"
    return backend.backend


def _sub_block_slots(skip_descriptors) -> dict[str, str]:
    """Each sub-block slot (skip name) and the member holding the sub-block: the last one its skip replaces (the first
    ones are norms). Linear sub-blocks live in the slot of what they replace, so their skips make no slot."""
    return {
        name: list(members)[-1]
        for name, members in skip_descriptors.items()
        if not any(issubclass(replacement, LinearSubBlock) for options in members.values() for replacement in options)
    }


def _format_window(layer: LayerSummary) -> str:
    """A layer's attention span: its window, `full`, or `-` when it holds no KV."""
    if not layer.kv_bytes_per_token:
        return "-"
    return "full" if layer.window is None else f"{layer.window:,}"


def _format_feed_forward(layer: LayerSummary) -> str:
    """The feed-forward width, as `experts x width (top k)` for a MoE."""
    if layer.num_experts is None:
        return _format_number(layer.intermediate_size)
    return f"{layer.num_experts}x{_format_number(layer.intermediate_size)} (top {layer.experts_per_token})"


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
    slots = [slot for slot, _ in summary.layers[0].blocks]
    backend_column = summary.decoder_backend is not None
    header = [
        "layer",
        *(["backend"] if backend_column else []),
        *slots,
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
        [str(layer.layer_idx), *([layer.backend] if backend_column else []), *(kind for _, kind in layer.blocks)]
        + [_format_number(value) for value in (layer.num_attention_heads, layer.num_key_value_heads, layer.head_dim)]
        + [_format_window(layer), _format_feed_forward(layer)]
        + [
            _format_number(value)
            for value in (
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
    table = _format_table(header, rows, left_aligned=1 + backend_column + len(slots))
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
