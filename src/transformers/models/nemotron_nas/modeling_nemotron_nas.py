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
"""Nemotron-NAS models: stock Llama classes bound to `NemotronNasConfig`.

The checkpoints hold standard Llama tensor names (`self_attn.linear_attn` / `mlp.linear_mlp` for linear sub-blocks,
nothing for no-op ones), and `NemotronNasConfig` expresses every block in `per_layer_config`, so the stock Llama code
builds them layer by layer; these classes only tie the Auto classes to the config. They keep the name the checkpoints
give in `architectures`. FP8 releases also carry KV-cache scales (`self_attn.k_scale` / `v_scale`): read, not used
(the cache stays in the model's dtype) and logged, as in every family (`loading_utils.UnusedTensorsMixin`).
"""

from ...generation import GenerationMixin
from ...heterogeneity.checkpoint_formats.loading_utils import FP8_KV_SCALES, UnusedTensorsMixin
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel
from .configuration_nemotron_nas import NemotronNasConfig


__all__ = ["DeciLMForCausalLM", "DeciLMModel"]


class DeciLMModel(UnusedTensorsMixin, LlamaModel):
    config_class = NemotronNasConfig
    _unused_tensors = (FP8_KV_SCALES,)


class DeciLMForCausalLM(UnusedTensorsMixin, LlamaForCausalLM, GenerationMixin):
    config_class = NemotronNasConfig
    _unused_tensors = (FP8_KV_SCALES,)
