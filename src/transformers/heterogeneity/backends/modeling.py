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
"""Swaps a base model's decoder layers for the backend the run asked for, once the model is built.

The stock layers are built first (each from its own `config.per_layer_config[i]`, skips applied), then each layer
chosen for TE is replaced by a TE layer read from it: the stock layer is the specification, so the TE layer has its
shapes, biases, norms and skips exactly. Every chosen layer is checked and built before the first swap, so a refusal
leaves no half-converted model. Under `from_pretrained` the stock layers live on the meta device and cost nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...utils import logging
from ..rotary_utils import keep_layer_rotary_embedding
from .selection import TRANSFORMER_ENGINE, plan_layer_backends, requested_decoder_backend


logger = logging.get_logger(__name__)

__all__ = ["apply_decoder_backend", "initialize_missing_parameters", "model_weight_conversions"]


def apply_decoder_backend(base_model: nn.Module) -> None:
    """Replaces the layers of `base_model.layers` that the requested backend runs (a no-op without a request)."""
    choice = requested_decoder_backend()
    if choice is None:
        return
    config = base_model.config
    if not any(entry.backend == TRANSFORMER_ENGINE for entry in plan_layer_backends(config, choice)):
        return  # every layer stays stock or parameter-free: TE is not needed
    from .transformer_engine import build_transformer_engine_layers

    replacements = build_transformer_engine_layers(base_model.layers, config, choice)
    for layer_idx, layer in replacements.items():
        keep_layer_rotary_embedding(base_model.layers[layer_idx], layer)  # e.g. its own `head_dim`
        base_model.layers[layer_idx] = layer
    logger.info(f"Decoder layers on TransformerEngine: {sorted(replacements)} of {config.num_hidden_layers}.")


def model_weight_conversions(model: nn.Module) -> list[Any]:
    """The transforms of every TE layer in `model`, with prefixes relative to the base model (checkpoints of a
    causal LM and of its base model both match)."""
    from .transformer_engine import TransformerEngineDecoderLayer  # TE's modules are imported only when used

    base_prefix = f"{getattr(model, 'base_model_prefix', '')}."
    conversions = []
    for name, module in model.named_modules():
        if isinstance(module, TransformerEngineDecoderLayer):
            conversions += module.weight_conversions(f"{name.removeprefix(base_prefix)}.")
    return conversions


def initialize_missing_parameters(model: nn.Module) -> None:
    """Initialises the TE parameters that loading left unset, with TE's own init of each parameter.

    `from_pretrained` marks every parameter it loads (`_is_hf_initialized`, transformers 5.23 `core_model_loading.py`)
    and then runs the model's `_init_weights` on the rest; TE modules are kept out of `_init_weights` (it would set the
    projection of a `LayerNormLinear` to ones, taking it for a norm), so a TE parameter whose tensor the checkpoint
    lacks would keep the uninitialised memory it was allocated with while the load report calls it newly initialised.
    Each such parameter gets the init function TE registered for it (`param_init_meta`, TE 2.20.2 `module/base.py`),
    leaving the loaded parameters of the same module untouched.
    """
    from .transformer_engine import TransformerEngineDecoderLayer

    for layer in model.modules():
        if not isinstance(layer, TransformerEngineDecoderLayer):
            continue
        for module in layer.modules():
            init_meta = getattr(module, "param_init_meta", None)
            if not init_meta:
                continue
            for name, parameter in module.named_parameters(recurse=False):
                if not getattr(parameter, "_is_hf_initialized", False) and name in init_meta:
                    with torch.no_grad():
                        init_meta[name].init_fn(parameter.data)
                    parameter._is_hf_initialized = True
