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
"""The mapping between HF checkpoint names and a TE layer's parameters, as upstream weight transforms.

Loading and saving go through upstream's own conversion machinery (`core_model_loading`): `from_pretrained` renames
and concatenates each tensor as it streams in, shard by shard, whether the checkpoint is one file or sharded, and
`save_pretrained` applies the reverse transforms, so the checkpoint on disk keeps the architecture's standard names
and shapes. Only the layers that run on TE get transforms (their indices are in the patterns), collected from the
model by `backends.modeling.model_weight_conversions` (called from `activation.patch_decoder_backends`).

The mapping (HF -> TE; NVIDIA TransformerEngine's `docs/examples/te_llama/te_llama.py`), per layer prefix:

| HF | TE |
|---|---|
| `input_layernorm.weight` | `self_attention.layernorm_qkv.layer_norm_weight` |
| `self_attn.{q,k,v}_proj.{weight,bias}` | `self_attention.layernorm_qkv.{query,key,value}_{weight,bias}` |
| `self_attn.{q,k}_norm.weight` | `self_attention.{q,k}_norm.weight` |
| `self_attn.o_proj.{weight,bias}` | `self_attention.proj.{weight,bias}` |
| `post_attention_layernorm.weight` | `layernorm_mlp.layer_norm_weight` |
| `mlp.gate_proj` + `mlp.up_proj` (rows) | `layernorm_mlp.fc1_{weight,bias}`: gate rows first (TE's swiglu applies SiLU to the first half) |
| `mlp.down_proj.{weight,bias}` | `layernorm_mlp.fc2_{weight,bias}` |
| `input_layernorm.weight`, `self_attn.linear_attn.weight` | `self_attention.{layer_norm_weight,weight}` (linear attention) |
| `post_attention_layernorm.weight`, `mlp.linear_mlp.weight` | `layernorm_mlp.{layer_norm_weight,weight}` (linear MLP) |
"""

from __future__ import annotations

from typing import Any

from ...core_model_loading import Concatenate, WeightConverter, WeightRenaming


__all__ = ["layer_weight_conversions"]


def _renames(prefix: str, pairs: list[tuple[str, str]]) -> list[WeightRenaming]:
    # Patterns double as replacement strings in upstream's transforms, so they are plain names: a `.` matches any
    # character, which cannot make `layers.3.x` match another layer's key (`layers.13.x`, `layers.30.x`).
    return [WeightRenaming(source_patterns=prefix + hf, target_patterns=prefix + te) for hf, te in pairs]


def layer_weight_conversions(shape: Any, prefix: str) -> list[Any]:
    """The transforms of one TE layer whose HF names start with `prefix` (e.g. `layers.3.`)."""
    pairs: list[tuple[str, str]] = []
    conversions: list[Any] = []
    if shape.attention == "attention":
        pairs.append(("input_layernorm.weight", "self_attention.layernorm_qkv.layer_norm_weight"))
        kinds = ["weight"] + (["bias"] if shape.qkv_bias else [])
        for hf_name, te_name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            pairs += [
                (f"self_attn.{hf_name}.{kind}", f"self_attention.layernorm_qkv.{te_name}_{kind}") for kind in kinds
            ]
        if shape.qk_norm_eps is not None:
            pairs += [(f"self_attn.{name}.weight", f"self_attention.{name}.weight") for name in ("q_norm", "k_norm")]
        pairs += [
            (f"self_attn.o_proj.{kind}", f"self_attention.proj.{kind}")
            for kind in ["weight"] + (["bias"] if shape.o_bias else [])
        ]
    elif shape.attention == "linear":
        pairs += [
            ("input_layernorm.weight", "self_attention.layer_norm_weight"),
            ("self_attn.linear_attn.weight", "self_attention.weight"),
        ]
    if shape.mlp == "mlp":
        pairs.append(("post_attention_layernorm.weight", "layernorm_mlp.layer_norm_weight"))
        for kind in ["weight"] + (["bias"] if shape.mlp_bias else []):
            pairs.append((f"mlp.down_proj.{kind}", f"layernorm_mlp.fc2_{kind}"))
            conversions.append(
                WeightConverter(
                    source_patterns=[prefix + f"mlp.gate_proj.{kind}", prefix + f"mlp.up_proj.{kind}"],
                    target_patterns=prefix + f"layernorm_mlp.fc1_{kind}",
                    operations=[Concatenate(dim=0)],
                )
            )
    elif shape.mlp == "linear":
        pairs += [
            ("post_attention_layernorm.weight", "layernorm_mlp.layer_norm_weight"),
            ("mlp.linear_mlp.weight", "layernorm_mlp.weight"),
        ]
    return _renames(prefix, pairs) + conversions
