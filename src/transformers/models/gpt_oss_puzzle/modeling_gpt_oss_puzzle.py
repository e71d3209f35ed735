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
"""gpt-oss-puzzle models: stock GPT-OSS classes bound to `GptOssPuzzleConfig`.

The checkpoints hold standard GPT-OSS tensor names, and `GptOssPuzzleConfig` expresses every block in
`per_layer_config`, so the stock GPT-OSS code builds them layer by layer. The checkpoints also carry fp8 KV-cache
scales, `model.layers.{i}.self_attn.k_scale` / `v_scale` (one scalar each), for engines that store the KV cache in
fp8. Transformers' caches keep keys and values in the model's dtype, where the scales have no role: they are read,
not used, and logged as such (`loading_utils.UnusedTensorsMixin`), as in every family; `save_pretrained` does not
write them.
"""

from ...generation import GenerationMixin
from ...heterogeneity.checkpoint_formats.loading_utils import FP8_KV_SCALES, UnusedTensorsMixin
from ...heterogeneity.checkpoint_formats.stock_classes import StockExpertsMixin
from ...integrations.mxfp4 import Mxfp4Dequantize
from ...utils.loading_report import LoadStateDictInfo
from ..gpt_oss.modeling_gpt_oss import GptOssForCausalLM, GptOssModel
from .configuration_gpt_oss_puzzle import GptOssPuzzleConfig


__all__ = ["GptOssPuzzleForCausalLM", "GptOssPuzzleModel"]


class DequantizedSaveMixin:
    """A model whose MXFP4 experts were dequantized on load saves them as the float parameters they now are.

    Upstream keeps the loading conversions on the model (`model._weight_conversions`, set by
    `core_model_loading.convert_and_load_state_dict_in_model`, transformers 5.23) and reverts them on save. The
    dequantizing conversion (`*_blocks` + `*_scales` -> the parameter) reverts to its first source name only, so
    `save_pretrained` wrote float tensors named `gate_up_proj_blocks` that no loader reads back (the same happens to
    stock GPT-OSS). Dropping that conversion once the weights are loaded makes the saved checkpoint hold
    `mlp.experts.gate_up_proj` / `down_proj`, which reload bit-exact (upstream already drops `quantization_config`
    from the saved config of a dequantized model).
    """

    def _adjust_missing_and_unexpected_keys(self, loading_info: LoadStateDictInfo) -> None:
        super()._adjust_missing_and_unexpected_keys(loading_info)
        conversions = getattr(self, "_weight_conversions", None) or []
        self._weight_conversions = [
            conversion
            for conversion in conversions
            if not any(isinstance(operation, Mxfp4Dequantize) for operation in getattr(conversion, "operations", ()))
        ]


class GptOssPuzzleModel(UnusedTensorsMixin, StockExpertsMixin, GptOssModel):
    config_class = GptOssPuzzleConfig
    _unused_tensors = (FP8_KV_SCALES,)


class GptOssPuzzleForCausalLM(
    DequantizedSaveMixin, UnusedTensorsMixin, StockExpertsMixin, GptOssForCausalLM, GenerationMixin
):
    config_class = GptOssPuzzleConfig
    _unused_tensors = (FP8_KV_SCALES,)
