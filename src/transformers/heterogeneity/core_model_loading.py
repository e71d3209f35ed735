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
"""Saving a model whose quantized weights were dequantized on load: the float parameters under their own names.

Upstream keeps the conversions a model was loaded with (`model._weight_conversions`, set by
`core_model_loading.convert_and_load_state_dict_in_model`, transformers 5.23) and `save_pretrained` reverts them
(`revert_weight_conversion`). A dequantizing conversion (MXFP4 `*_blocks` + `*_scales` -> the parameter,
`integrations/mxfp4.py`; likewise compressed-tensors and Metal) reverts with `_IdentityOp`, "saved as-is", but still
under the conversion's source names: `save_pretrained` wrote float tensors named `experts.gate_up_proj_blocks`, no
`*_scales`, and (rightly) no `quantization_config`, so a reload missed every expert tensor. A heterogeneous MoE with
per-layer expert counts always loads its MXFP4 experts dequantized (`models/gpt_oss_puzzle`: MXFP4 kernels are
built from the global count), so every family that loads MXFP4 (gpt-oss-puzzle, AnyModel gpt-oss, converted
`gpt_oss` + `per_layer_config`) hit it. Leaving those conversions out of the ones reverted saves the parameters as
the model holds them, which is what an unquantized checkpoint of the architecture holds.
"""

from __future__ import annotations

from typing import Any

from ..core_model_loading import WeightConverter, _IdentityOp


__all__ = ["drop_dequantizing_conversions"]


def drop_dequantizing_conversions(model: Any) -> None:
    """Removes from `model._weight_conversions` the conversions that dequantized weights on load (their reverse is
    the identity: the weights are saved as the float parameters they now are). Idempotent; a model not loaded with
    `from_pretrained` has none."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [conversion for conversion in conversions if not _dequantizes(conversion)]


def _dequantizes(conversion: Any) -> bool:
    if not isinstance(conversion, WeightConverter) or not conversion.operations:
        return False
    return all(isinstance(_reverse_op(operation), _IdentityOp) for operation in conversion.operations)


def _reverse_op(operation: Any) -> Any:
    try:
        return operation.reverse_op
    except NotImplementedError:  # `ConversionOps.reverse_op` for operations that cannot be reversed
        return None
