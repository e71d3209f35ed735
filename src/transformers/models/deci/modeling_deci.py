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
"""DeciLM models: stock Llama classes bound to `DeciConfig`.

The checkpoints name their classes `DeciLMModel` / `DeciLMForCausalLM` in `architectures`, as Nemotron-NAS checkpoints
do; those names belong to `models/nemotron_nas` (one class per name in `transformers`), so these are `DeciModel` /
`DeciForCausalLM`, and `DeciConfig` writes the released names back on save (`released_architectures`), so that a saved
checkpoint keeps the `architectures` of its format. fp8 KV-cache scales (`self_attn.k_scale` / `v_scale`), where a
checkpoint has them, are read, not used and logged, as in every family (`loading_utils.UnusedTensorsMixin`).
"""

from ...generation import GenerationMixin
from ...heterogeneity.checkpoint_formats.loading_utils import FP8_KV_SCALES, UnusedTensorsMixin
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel
from .configuration_deci import DeciConfig


__all__ = ["DeciForCausalLM", "DeciModel"]


class DeciModel(UnusedTensorsMixin, LlamaModel):
    config_class = DeciConfig
    _unused_tensors = (FP8_KV_SCALES,)


class DeciForCausalLM(UnusedTensorsMixin, LlamaForCausalLM, GenerationMixin):
    config_class = DeciConfig
    _unused_tensors = (FP8_KV_SCALES,)
