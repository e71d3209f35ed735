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
"""DeciLM models: stock Llama classes bound to `DeciConfig`, named as the checkpoints' `architectures`.

fp8 KV-cache scales (`self_attn.k_scale` / `v_scale`), where a checkpoint has them, are read, not used and logged, as
in every family (`loading_utils.UnusedTensorsMixin`).
"""

from ...heterogeneity.checkpoint_formats.loading_utils import FP8_KV_SCALES, UnusedTensorsMixin
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel
from .configuration_deci import DeciConfig


__all__ = ["DeciLMForCausalLM", "DeciLMModel"]


class DeciLMModel(UnusedTensorsMixin, LlamaModel):
    config_class = DeciConfig
    _unused_tensors = (FP8_KV_SCALES,)


class DeciLMForCausalLM(UnusedTensorsMixin, LlamaForCausalLM):
    config_class = DeciConfig
    _unused_tensors = (FP8_KV_SCALES,)
