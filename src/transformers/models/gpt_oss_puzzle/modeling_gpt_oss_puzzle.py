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
write them. MXFP4 experts, dequantized on load, are saved as floats under their own names (`core_model_loading.py`).
"""

from ...generation import GenerationMixin
from ...heterogeneity.checkpoint_formats.loading_utils import FP8_KV_SCALES, UnusedTensorsMixin
from ...heterogeneity.checkpoint_formats.stock_classes import StockExpertsMixin
from ..gpt_oss.modeling_gpt_oss import GptOssForCausalLM, GptOssModel
from .configuration_gpt_oss_puzzle import GptOssPuzzleConfig


__all__ = ["GptOssPuzzleForCausalLM", "GptOssPuzzleModel"]


class GptOssPuzzleModel(UnusedTensorsMixin, StockExpertsMixin, GptOssModel):
    config_class = GptOssPuzzleConfig
    _unused_tensors = (FP8_KV_SCALES,)


class GptOssPuzzleForCausalLM(UnusedTensorsMixin, StockExpertsMixin, GptOssForCausalLM, GenerationMixin):
    config_class = GptOssPuzzleConfig
    _unused_tensors = (FP8_KV_SCALES,)
