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
"""Nemotron-NAS (`model_type: "nemotron-nas"`): NVIDIA's Llama-3.1-Nemotron-51B, Llama-3.3-Nemotron-Super-49B and
Llama-3.1-Nemotron-Ultra-253B, found by neural architecture search from Llama 3, and the DeciLM checkpoints NVIDIA
Model-Optimizer's Puzzletron writes for models users compress themselves.

Their `config.json` gives one `block_configs` entry per layer (`{"attention": {...}, "ffn": {...}}`) and leaves the
global `intermediate_size` and `num_key_value_heads` null (the releases) or out (Model-Optimizer). Three block schemas
exist: the releases' (`n_heads_in_group`, `ffn_mult`, sink / window fields), and Model-Optimizer's of Nov 2025
(`modelopt/torch/_compress/decilm/deci_lm_hf_code/block_config.py`: `n_heads_in_group`, sink / window fields,
`ffn.intermediate_size`, `gated`, `hidden_act`, `moe`, `mamba`, `llama4`, `weights_precision`, `parallel_blocks`) and
Jan 2026 (`modelopt/torch/puzzletron/block_config.py`: `attention.num_key_value_heads` instead of `n_heads_in_group`
and the sink / window fields, no `gated` / `hidden_act`). Model-Optimizer writes them with `dataclasses.asdict`, so
every field is present, most of them null or at their default. Each entry maps onto the per-layer vocabulary:

| block field | per-layer value |
|---|---|
| `attention.n_heads_in_group` (or `attention.num_key_value_heads`) | `num_key_value_heads = num_attention_heads // n` |
| `attention.no_op` / `attention.replace_with_linear` | `"skip": ["attention"]` / `["attention_replaced_by_linear"]` |
| `ffn.ffn_mult` (or `ffn.intermediate_size`) | `intermediate_size`, rounded as below |
| `ffn.hidden_act` | `hidden_act` |
| `ffn.no_op` / `ffn.replace_with_linear` | `"skip": ["mlp"]` / `["mlp_replaced_by_linear"]` |

A null field, or one at its default (`weights_precision: "bf16"`, `gated: true`, `unshifted_sink: false`,
`parallel_blocks: null`, ...), changes nothing and is accepted. Anything else (`sparsify`, sink or windowed attention,
MoE, Mamba or Llama-4 sub-blocks, non-gated FFNs, other weight precisions, parallel blocks, unknown keys) is refused
with an error naming the layer and the field: building a dense Llama layer instead would be silently wrong. The
top-level fields of Model-Optimizer's `DeciLMConfig` are honoured or refused by name in the same way (`_TOP_LEVEL`).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...heterogeneity.checkpoint_formats.decilm_blocks import DeciLMBlocks
from ...heterogeneity.checkpoint_formats.format_utils import CheckpointFormatConfigMixin, most_common
from ...heterogeneity.configuration_utils import HeterogeneousConfigError
from ..llama.configuration_llama import LlamaConfig


__all__ = ["NemotronNasConfig"]

# Top-level fields of Model-Optimizer's `DeciLMConfig` (`deci_lm_hf_code/configuration_decilm.py`), which stock
# LlamaConfig does not know: field -> (the values a stock Llama model honours, why others are refused), or a reason
# why any value changes nothing. `position_embedding_type` other than "rope": "rope_llama4" and "mistral_yarn" rotate
# non-neox style (vLLM's and TensorRT-LLM's readers), "none" has no positions at all.
_TOP_LEVEL = {
    "position_embedding_type": (("rope", None), "only rope (Llama's rotary embedding) is built"),
    "o_proj_bias": ((False, None), "a bias on `o_proj` alone is not built (`attention_bias` biases q, k, v and o)"),
    "output_router_logits": ((False, None), "the model has no routers (MoE FFNs are refused)"),
}
# Top-level fields of the same writer that change nothing a stock Llama model computes, whatever their value:
# `llama4_attn_implementation` (the kernel of Llama-4 attention blocks, which are refused), `block_return_only_hidden_
# states` (what the remote code's blocks return), `router_aux_loss_coef` / `router_z_loss_coef` (training-loss weights
# of MoE routers; the model has none). `head_dim` is a LlamaConfig field, honoured.


@strict
class NemotronNasConfig(CheckpointFormatConfigMixin, LlamaConfig):
    r"""
    Configuration of a Nemotron-NAS (DeciLM) checkpoint: a Llama config plus `block_configs`, translated into
    `per_layer_config` when the config is made and saved back unchanged.

    Args:
        block_configs (`list[dict]`, *optional*):
            One entry per layer, `{"attention": {...}, "ffn": {...}}`, as written by NVIDIA's checkpoints. Without
            it, every layer is a dense Llama layer of the global values.
        intermediate_size (`int`, *optional*):
            Global FFN width. Null in the released checkpoints; then the most common width of the real FFN blocks
            (only layers with another width get a per-layer value).
        num_key_value_heads (`int`, *optional*):
            Global KV-head count; null in the released checkpoints, filled like `intermediate_size`.
    """

    model_type = "nemotron-nas"
    format_fields = ("block_configs",)

    intermediate_size: int | None = None
    block_configs: list[dict[str, Any]] | None = None

    def __post_init__(self, **kwargs):
        # Unknown to LlamaConfig, these arrive here rather than as fields; they stay attributes (written back on save).
        for name, (honoured, why) in _TOP_LEVEL.items():
            if kwargs.get(name) not in honoured:
                raise HeterogeneousConfigError(
                    f"nemotron-nas: `{name}`={kwargs[name]!r} is refused: {why}; ignoring it would build a different "
                    "model than the checkpoint's."
                )
        super().__post_init__(**kwargs)

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        blocks = [] if self.block_configs is None else self._one_block_per_layer()
        translator = DeciLMBlocks("nemotron-nas", self.num_attention_heads, self.hidden_size)
        per_layer = {idx: translator.translate(idx, block) for idx, block in enumerate(blocks)}
        derived = {}
        if self.num_key_value_heads is None:
            kv_heads = (layer.get("num_key_value_heads") for layer in per_layer.values())
            derived["num_key_value_heads"] = most_common(filter(None, kv_heads), self.num_attention_heads)
        if self.intermediate_size is None:
            widths = (layer.get("intermediate_size") for layer in per_layer.values())
            # A model whose FFNs are all no-op or linear builds none: any width will do.
            derived["intermediate_size"] = most_common(filter(None, widths), self.hidden_size)
        return {idx: layer for idx, layer in per_layer.items() if layer}, derived
