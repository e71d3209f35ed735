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
"""How the TransformerEngine layers of one model run their matrix products: the FP8 recipe, built once, and what it
needs of the shapes.

Facts from TransformerEngine 2.20.2's Python sources (`transformer_engine/pytorch/`):

- `quantization.py`, `FP8GlobalStateManager.autocast_enter`: `autocast(recipe=None)` builds TE's default recipe
  (`get_default_fp8_recipe()`) at every entry, FP8 or not, and registers it under a key made from its `str()`. So a
  model's recipe is built once here and every TE layer enters `autocast` with that object.
- `quantization.py`, `get_default_fp8_recipe`: `MXFP8BlockScaling` where MXFP8 runs (compute capability 10.x,
  Blackwell), `Float8CurrentScaling` on 12.x, `DelayedScaling` below.
- `quantization.py`, `get_align_size_for_quantization`: what each recipe needs of a GEMM dimension: 16 for the
  per-tensor and block recipes, 32 for MXFP8 (its scales cover blocks of 32 elements, `tensor/mxfp8_tensor.py`
  `MXFP8Quantizer.is_quantizable`), 128 for NVFP4, a custom recipe's own `quantization_alignment`. TE's `Fp8Padding`
  module (`module/fp8_padding.py`) pads the rows of grouped GEMMs to it.
- `utils.py`, `assert_dim_for_fp8_exec`, called by `Linear`, `LayerNormLinear` and `LayerNormMLP` under FP8: the
  token count (product of the input's leading dimensions) must be divisible by 8 and the last dimension by 16, else
  `ValueError`. A decode step of 3 sequences is 3 tokens: FP8 cannot run it as is, so the layers pad the token rows
  (`pad_tokens`) instead of leaving such steps unquantized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .selection import DecoderBackendError, LayerBackend, TransformerEngineBackend


__all__ = ["ModelPrecision", "check_fp8_plan", "model_precision", "pad_tokens"]

# `assert_dim_for_fp8_exec` (TE 2.20.2 `pytorch/utils.py`): FP8 GEMM inputs need a token count divisible by 8.
_FP8_TOKEN_ALIGNMENT = 8


@dataclass(frozen=True)
class ModelPrecision:
    """The TE autocast settings shared by every TE layer of one model.

    Attributes:
        recipe: The TE recipe object every TE layer passes to `autocast` (with `enabled=False` where FP8 is off).
        alignment: What the recipe needs of every GEMM dimension (TE's `get_align_size_for_quantization`).
        token_alignment: The multiple the token count of an FP8 layer's GEMMs is padded to.
    """

    recipe: Any
    alignment: int
    token_alignment: int

    @property
    def recipe_name(self) -> str:
        return type(self.recipe).__name__


def model_precision(te: Any, choice: TransformerEngineBackend) -> ModelPrecision:
    """The recipe of a model (the one asked for, else TE's default for this device) and its alignments, built once."""
    recipe = te.get_default_recipe() if choice.fp8 is True or not choice.fp8 else choice.fp8
    alignment = te.quantization.get_align_size_for_quantization(recipe)
    return ModelPrecision(recipe, alignment, math.lcm(alignment, _FP8_TOKEN_ALIGNMENT))


def check_fp8_plan(te: Any, plan: list[LayerBackend], precision: ModelPrecision) -> None:
    """Refuses a layer chosen for FP8 that the recipe cannot run, then a recipe this device cannot run.

    Raises:
        DecoderBackendError: naming the first such layer, the recipe and what it needs.
    """
    for entry in plan:
        if entry.refusal is not None:
            raise DecoderBackendError(
                f"Layer {entry.layer_idx}: decoder_backend asks for FP8 with recipe {precision.recipe_name}, which "
                f"needs every GEMM dimension divisible by {precision.alignment}: {entry.refusal}. "
                "TransformerEngineBackend(layers='fp8_compatible', fp8=...) keeps such layers stock; or leave this "
                "layer out of `layers`."
            )
    fp8_layers = [entry.layer_idx for entry in plan if entry.fp8]
    if not fp8_layers:
        return
    try:
        te.quantization.check_recipe_support(precision.recipe)
    except RuntimeError as error:
        raise DecoderBackendError(
            f"Layer {fp8_layers[0]}: decoder_backend asks for FP8 with recipe {precision.recipe_name}, which this "
            f"device cannot run ({error}); drop `fp8` from TransformerEngineBackend, or pass a recipe it runs."
        ) from error


def pad_tokens(module: nn.Module, hidden_states: torch.Tensor, multiple: int) -> torch.Tensor:
    """`module(hidden_states)`, with the token rows padded by zeros to a multiple of `multiple` and cut back after.

    Zero rows change no amax (every recipe scales by maxima of absolute values) and the modules here are row-wise
    (norm, then GEMM), so the real rows' results are those of an unpadded call.
    """
    tokens = hidden_states.shape[:-1].numel()
    missing = -tokens % multiple
    if not missing:
        return module(hidden_states)
    rows = nn.functional.pad(hidden_states.reshape(tokens, hidden_states.shape[-1]), (0, 0, 0, missing))
    output = module(rows)[:tokens]
    return output.reshape(*hidden_states.shape[:-1], output.shape[-1])
