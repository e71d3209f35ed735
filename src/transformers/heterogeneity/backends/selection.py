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
"""The run-time choice of decoder backend per layer (`decoder_backend=...`), and which layer gets which backend.

Like `attn_implementation`, the choice belongs to the run, not to the checkpoint: it is given when a model is built or
loaded (`from_pretrained(..., decoder_backend=...)`, `from_config(..., decoder_backend=...)`, or the
`use_decoder_backend(...)` context around a direct `XForCausalLM(config)`), never written to `config.json`, and the
weights are saved in the architecture's standard layout whatever ran them. It travels from the entry point to the
layers in a context variable, so concurrent constructions in other threads or tasks do not see it.

Accepted forms (`parse_decoder_backend`):

- `None` or `"stock"`: every layer stays the stock PyTorch layer (the default);
- `"transformer_engine"`: every layer runs on NVIDIA TransformerEngine;
- `{"transformer_engine": [0, 2, 5]}`: those layers (indices in `[0, num_hidden_layers)`) on TE, the others stock;
- `{"transformer_engine": "fp8_compatible"}`: the layers whose matrix products the FP8 recipe can run (every GEMM
  dimension divisible by the recipe's alignment: 16, or 32 for MXFP8, TE's default recipe on Blackwell);
- `TransformerEngineBackend(layers=..., fp8=...)`: the same choices, plus FP8 execution (`fp8=True` for TE's default
  recipe, or a TE recipe object). A chosen layer that the recipe cannot run is refused, by name.

A layer whose attention and MLP are both skipped computes nothing and keeps its parameter-free stock form.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...configuration_utils import PreTrainedConfig
from ..configuration_utils import HeterogeneousConfigError, get_layer_overrides
from ..supported_models import SUPPORTED_ARCHITECTURES, get_architecture


__all__ = [
    "DecoderBackendError",
    "LayerBackend",
    "TransformerEngineBackend",
    "parse_decoder_backend",
    "plan_layer_backends",
    "requested_decoder_backend",
    "transformer_engine_model_types",
    "use_decoder_backend",
]

STOCK, TRANSFORMER_ENGINE, IDENTITY = "stock", "transformer_engine", "identity"
_LAYER_RULES = ("all", "fp8_compatible")
# The alignment of every GEMM dimension that FP8 needs when the recipe is not known (planning from a config alone): 16,
# that of TE's per-tensor recipes (DelayedScaling, Float8CurrentScaling). TE 2.20.2 `pytorch/utils.py`
# `assert_dim_for_fp8_exec` checks it; `pytorch/quantization.py` `get_align_size_for_quantization` gives each recipe's
# (32 for MXFP8, whose scales cover blocks of 32 elements: `pytorch/tensor/mxfp8_tensor.py`), which the backend uses
# once TE and the recipe are known.
FP8_ALIGNMENT = 16


class DecoderBackendError(HeterogeneousConfigError):
    """A `decoder_backend` choice that cannot be honoured; the message names the layer and the attribute."""


@dataclass(frozen=True)
class TransformerEngineBackend:
    """Runs the chosen decoder layers on NVIDIA TransformerEngine.

    Args:
        layers (`str` or `tuple[int, ...]`, *optional*, defaults to `"all"`): `"all"`, `"fp8_compatible"` (the
            layers whose GEMM dimensions are all divisible by the FP8 recipe's alignment), or the indices of the layers.
        fp8 (`bool` or a TE recipe, *optional*, defaults to `False`): run the TE layers' matrix products in FP8 under
            `transformer_engine.pytorch.autocast` with this recipe (`True`: TE's default recipe for the device). A
            chosen layer whose dimensions the recipe cannot run is refused by name (`layers="fp8_compatible"` keeps
            such layers stock).
    """

    layers: str | tuple[int, ...] = "all"
    fp8: Any = False

    def __post_init__(self):
        layers = self.layers
        if isinstance(layers, str):
            if layers not in _LAYER_RULES:
                raise DecoderBackendError(
                    f"decoder_backend: unknown layer rule {layers!r}; use one of {list(_LAYER_RULES)} or a list of "
                    "layer indices."
                )
            return
        if not all(isinstance(index, int) and not isinstance(index, bool) for index in layers):
            raise DecoderBackendError(
                f"decoder_backend: layers must be {list(_LAYER_RULES)} or a list of integer layer indices, got "
                f"{layers!r}."
            )
        object.__setattr__(self, "layers", tuple(layers))


@dataclass(frozen=True)
class LayerBackend:
    """Which backend runs one layer, and whether its matrix products run in FP8.

    `note` says why a layer is not on the backend asked for; `refusal` why FP8, asked for, cannot run the layer (a
    GEMM dimension the recipe cannot take): building the model raises it, `inspect` shows it.
    """

    layer_idx: int
    backend: str
    fp8: bool = False
    note: str | None = None
    refusal: str | None = None


def parse_decoder_backend(value: Any) -> TransformerEngineBackend | None:
    """Normalises a user's `decoder_backend` value; `None` means every layer stays stock.

    Raises:
        DecoderBackendError: the value is none of the accepted forms (see the module docstring).
    """
    if value is None or value == STOCK:
        return None
    if isinstance(value, TransformerEngineBackend):
        return value
    if value == TRANSFORMER_ENGINE:
        return TransformerEngineBackend()
    if isinstance(value, dict) and set(value) == {TRANSFORMER_ENGINE}:
        layers = value[TRANSFORMER_ENGINE]
        return TransformerEngineBackend(layers=layers if isinstance(layers, str) else tuple(layers))
    raise DecoderBackendError(
        f"decoder_backend={value!r} is not understood. Use 'stock', 'transformer_engine', "
        "{'transformer_engine': [layer indices]}, {'transformer_engine': 'fp8_compatible'} or "
        "TransformerEngineBackend(layers=..., fp8=...)."
    )


_requested: contextvars.ContextVar[TransformerEngineBackend | None] = contextvars.ContextVar(
    "heterogeneity_decoder_backend", default=None
)


@contextlib.contextmanager
def use_decoder_backend(value: Any) -> Iterator[TransformerEngineBackend | None]:
    """Models built inside this context run their layers on the chosen backend (see the module docstring).

    `from_pretrained(..., decoder_backend=...)` and `from_config(..., decoder_backend=...)` enter it for you; use it
    directly around `XForCausalLM(config)`.
    """
    token = _requested.set(parse_decoder_backend(value))
    try:
        yield _requested.get()
    finally:
        _requested.reset(token)


def requested_decoder_backend() -> TransformerEngineBackend | None:
    """The choice of the model construction in progress in this context, if any."""
    return _requested.get()


def _layer_dimensions(layer_config: PreTrainedConfig, skips: list[str]) -> dict[str, tuple[int, int]]:
    """Each GEMM of a layer and its weight's `(out_features, in_features)`, from the layer's config."""
    hidden = layer_config.hidden_size
    dims = {}
    if "attention" not in skips and "attention_replaced_by_linear" not in skips:
        heads, kv_heads = layer_config.num_attention_heads, layer_config.num_key_value_heads
        head_dim = getattr(layer_config, "head_dim", None) or hidden // heads
        dims["qkv"] = ((heads + 2 * kv_heads) * head_dim, hidden)
        dims["proj"] = (hidden, heads * head_dim)
    elif "attention_replaced_by_linear" in skips:
        dims["attention_replaced_by_linear"] = (hidden, hidden)
    if "mlp" not in skips and "mlp_replaced_by_linear" not in skips:
        dims["fc1"] = (2 * layer_config.intermediate_size, hidden)
        dims["fc2"] = (hidden, layer_config.intermediate_size)
    elif "mlp_replaced_by_linear" in skips:
        dims["mlp_replaced_by_linear"] = (hidden, hidden)
    return dims


def fp8_incompatibility(
    layer_config: PreTrainedConfig, skips: list[str], alignment: int = FP8_ALIGNMENT
) -> str | None:
    """Why FP8 with a recipe of this `alignment` cannot run a layer's matrix products (`None` if it can)."""
    for name, (out_features, in_features) in _layer_dimensions(layer_config, skips).items():
        if out_features % alignment or in_features % alignment:
            return f"{name} weight is {out_features}x{in_features}, not divisible by {alignment}"
    return None


def transformer_engine_model_types() -> list[str]:
    """The model types whose layers a TE layer expresses exactly (Llama-family layers: RMSNorm, rotary attention with
    GQA and optional q/k RMSNorm, SwiGLU MLP), as the registry declares them (`ArchitectureSpec.decoder_backends`)."""
    return sorted(
        model_type
        for model_type, architecture in SUPPORTED_ARCHITECTURES.items()
        if TRANSFORMER_ENGINE in architecture.decoder_backends
    )


def plan_layer_backends(
    config: PreTrainedConfig, choice: TransformerEngineBackend | None, fp8_alignment: int = FP8_ALIGNMENT
) -> list[LayerBackend]:
    """The backend of every layer of a model built from `config` with `choice`, from the config alone (no TE needed).

    `fp8_alignment` is what the FP8 recipe needs of every GEMM dimension; the backend passes the recipe's own once TE
    is imported (TE 2.20.2 `quantization.get_align_size_for_quantization`: 32 for MXFP8).

    Raises:
        DecoderBackendError: a layer index out of range or repeated, or TE asked for an architecture it cannot run.
    """
    num_layers = config.num_hidden_layers
    if choice is None:
        return [LayerBackend(layer_idx, STOCK) for layer_idx in range(num_layers)]
    architecture = get_architecture(config)
    if architecture is None or TRANSFORMER_ENGINE not in architecture.decoder_backends:
        raise DecoderBackendError(
            f"decoder_backend='transformer_engine' cannot run model_type {config.model_type!r} (layer 0): TE layers "
            f"express the decoder layers of {transformer_engine_model_types()}; leave decoder_backend unset."
        )
    if isinstance(choice.layers, tuple):
        for index in choice.layers:
            if not 0 <= index < num_layers:
                raise DecoderBackendError(
                    f"decoder_backend: layer {index} is out of range; the model has layers [0, {num_layers})."
                )
        if len(set(choice.layers)) != len(choice.layers):
            raise DecoderBackendError(f"decoder_backend: layer indices {list(choice.layers)} repeat a layer.")
    plan = []
    for layer_idx in range(num_layers):
        skips = get_layer_overrides(config, layer_idx).get("skip", [])
        layer_config = config.per_layer_config[layer_idx]
        no_fp8 = fp8_incompatibility(layer_config, skips, fp8_alignment)
        if {"attention", "mlp"}.issubset(skips):
            plan.append(LayerBackend(layer_idx, IDENTITY, note="attention and mlp skipped: nothing to run"))
            continue
        if choice.layers == "all":
            chosen = True
        elif choice.layers == "fp8_compatible":
            chosen = no_fp8 is None
        else:
            chosen = layer_idx in choice.layers
        if not chosen:
            plan.append(LayerBackend(layer_idx, STOCK, note=no_fp8 if choice.layers == "fp8_compatible" else None))
        elif choice.fp8 and no_fp8 is not None:
            plan.append(LayerBackend(layer_idx, TRANSFORMER_ENGINE, refusal=no_fp8))
        else:
            plan.append(LayerBackend(layer_idx, TRANSFORMER_ENGINE, fp8=bool(choice.fp8)))
    return plan
