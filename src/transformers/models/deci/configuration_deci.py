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
"""DeciLM-7B / DeciLM-6B (`model_type: "deci"`): a Llama config plus `num_key_value_heads_per_layer`.

Their `rope_scaling` is `{"type": "dynamic", "factor": 2.0}` (dynamic NTK): Transformers' Llama rotary embedding
implements it (beyond `max_position_embeddings` the base grows with the sequence), so it is honoured as is.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...heterogeneity.checkpoint_formats.format_utils import CheckpointFormatConfigMixin, most_common
from ...heterogeneity.configuration_utils import HeterogeneousConfigError
from ..llama.configuration_llama import LlamaConfig


__all__ = ["DeciConfig"]


@strict
class DeciConfig(CheckpointFormatConfigMixin, LlamaConfig):
    r"""
    Configuration of a DeciLM checkpoint: a Llama config whose KV-head count differs per layer.

    Args:
        num_key_value_heads_per_layer (`list[int]`, *optional*):
            KV heads of each layer, translated into `per_layer_config` and saved back unchanged. Without it, every
            layer has `num_key_value_heads`.
        num_key_value_heads (`int`, *optional*):
            Absent from the released configs; then the most common per-layer value (only the other layers get a
            per-layer value).
    """

    model_type = "deci"
    format_fields = ("num_key_value_heads_per_layer",)
    released_architectures = {"DeciModel": "DeciLMModel", "DeciForCausalLM": "DeciLMForCausalLM"}

    num_key_value_heads_per_layer: list[int] | None = None

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        kv_heads = self.num_key_value_heads_per_layer
        if kv_heads is None:  # every layer has the global `num_key_value_heads`
            return {}, {}
        if not isinstance(kv_heads, list) or len(kv_heads) != self.num_hidden_layers:
            raise HeterogeneousConfigError(
                f"deci: `num_key_value_heads_per_layer` must list one value per layer ({self.num_hidden_layers}), got "
                f"{kv_heads!r}."
            )
        for layer_idx, value in enumerate(kv_heads):
            if not isinstance(value, int) or value <= 0 or self.num_attention_heads % value:
                raise HeterogeneousConfigError(
                    f"deci layer {layer_idx}: `num_key_value_heads_per_layer[{layer_idx}]`={value!r} must be a "
                    f"positive integer dividing `num_attention_heads`={self.num_attention_heads}."
                )
        derived = {}
        if self.num_key_value_heads is None:  # the released configs have none
            derived["num_key_value_heads"] = most_common(kv_heads, self.num_attention_heads)
        return {idx: {"num_key_value_heads": value} for idx, value in enumerate(kv_heads)}, derived
