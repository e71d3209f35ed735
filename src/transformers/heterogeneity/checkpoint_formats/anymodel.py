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
"""NVIDIA Model-Optimizer "AnyModel" outputs: a stock config (`model_type` of the parent: `llama`, `gpt_oss`, ...)
plus `block_configs`, translated into `per_layer_config` so that the stock classes build the layers the blocks say.

Source: NVIDIA/Model-Optimizer `modelopt/torch/puzzletron/anymodel/` (`converter/base.py` attaches `block_configs` to
the parent's config; `models/<family>/*_converter.py` write them per family) and `block_config.py` (the Jan 2026 block
schema, written with `dataclasses.asdict`: every field present). The weights are stock tensors under
`subblocks_safetensors/` (`embeddings`, `lm_head`, `block_{i}_attention`, `block_{i}_ffn`), with
`model.safetensors.index.json` at the root, which upstream's loader follows as is.

Without this translation upstream keeps `block_configs` as an unknown attribute and builds every layer at the global
size, so the checkpoint fails with size mismatches. With it:

| model type | block field | per-layer value |
|---|---|---|
| `llama`, `mistral`, `qwen2`, `qwen3` | every field of the DeciLM block schema (`decilm_blocks.py`) | as for Nemotron-NAS |
| `gpt_oss` | `attention.num_key_value_heads` | `num_key_value_heads` |
| `gpt_oss` | `attention.no_op` / `ffn.no_op` | `"skip": ["attention"]` / `["mlp"]` |
| `gpt_oss` | `ffn.moe.num_local_experts`, `num_experts_per_tok`, `expert_intermediate_dim` | `num_local_experts`, `num_experts_per_tok`, `intermediate_size` |
| `gpt_oss` | `ffn.moe.shared_expert_intermediate_dim` | accepted at the writer's default (8192): GPT-OSS has no shared expert |

GPT-OSS windows come from the global `layer_types`, as in the parent; MXFP4 experts with per-layer counts are
dequantized on load, as for gpt-oss-puzzle. Anything else (a linear sub-block or a dense FFN
in GPT-OSS, the fields `decilm_blocks.py` refuses) is refused with an error naming the layer and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..configuration_utils import HeterogeneousConfigError
from .decilm_blocks import DeciLMBlocks, refuse_non_default_fields, sub_block_kind
from .format_utils import mxfp4_dequantized_on_load


__all__ = ["anymodel_canonical_dict", "anymodel_model_types", "anymodel_per_layer_config", "is_anymodel_config"]

# `MoEConfig.shared_expert_intermediate_dim`'s default in `block_config.py`; the gpt_oss converter leaves it there.
_SHARED_EXPERT_DEFAULT = 8192
_GPT_OSS_MOE_FIELDS = {
    "num_local_experts": "num_local_experts",
    "num_experts_per_tok": "num_experts_per_tok",
    "expert_intermediate_dim": "intermediate_size",
}


def _dense_block(config: Any, layer_idx: int, block: dict[str, Any]) -> dict[str, Any]:
    family = f"{config.model_type} (AnyModel)"
    return DeciLMBlocks(family, config.num_attention_heads, config.hidden_size).translate(layer_idx, block)


def _gpt_oss_block(config: Any, layer_idx: int, block: dict[str, Any]) -> dict[str, Any]:
    family = "gpt_oss (AnyModel)"
    where = f"{family} layer {layer_idx}"
    unknown = sorted(name for name, value in block.items() if name not in ("attention", "ffn") and value is not None)
    if unknown:
        raise HeterogeneousConfigError(
            f"{where}: `{unknown[0]}`={block[unknown[0]]!r} is refused: GPT-OSS layers hold one attention and one MoE."
        )
    for name in ("attention", "ffn"):
        if not isinstance(block.get(name), dict):
            raise HeterogeneousConfigError(
                f"{where}: `{name}`={block.get(name)!r} is refused: a GPT-OSS block gives `attention` and `ffn` as "
                "mappings (`{'no_op': true}` skips one)."
            )
    attention, ffn = block["attention"], block["ffn"]
    refuse_non_default_fields(family, layer_idx, "attention", attention, frozenset({"no_op", "num_key_value_heads"}))
    refuse_non_default_fields(family, layer_idx, "ffn", ffn, frozenset({"no_op", "moe", "intermediate_size"}))
    layer: dict[str, Any] = {}
    skips = []
    for name, fields, skip in (("attention", attention, "attention"), ("ffn", ffn, "mlp")):
        kind = sub_block_kind(family, layer_idx, name, fields)
        if kind == "linear":
            raise HeterogeneousConfigError(
                f"{where}: `{name}.replace_with_linear`=True is refused: GPT-OSS has no linear sub-blocks (the "
                "Llama-family architectures do)."
            )
        if kind == "no_op":
            skips.append(skip)
    if "attention" not in skips and attention.get("num_key_value_heads") is not None:
        layer["num_key_value_heads"] = attention["num_key_value_heads"]
    if "mlp" not in skips:
        layer.update(_gpt_oss_moe(where, ffn))
    if skips:
        layer["skip"] = skips
    return layer


def _gpt_oss_moe(where: str, ffn: dict[str, Any]) -> dict[str, Any]:
    moe = ffn.get("moe")
    if not isinstance(moe, dict) or ffn.get("intermediate_size") is not None:
        raise HeterogeneousConfigError(
            f"{where}: `ffn.moe`={moe!r}, `ffn.intermediate_size`={ffn.get('intermediate_size')!r} is refused: every "
            "GPT-OSS FFN is a MoE (`ffn.moe` set, no dense width)."
        )
    unknown = sorted(set(moe) - {*_GPT_OSS_MOE_FIELDS, "shared_expert_intermediate_dim"})
    if unknown:
        raise HeterogeneousConfigError(
            f"{where}: `ffn.moe.{unknown[0]}`={moe[unknown[0]]!r} is refused: the field is unknown to "
            "transformers.heterogeneity."
        )
    shared = moe.get("shared_expert_intermediate_dim")
    if shared not in (None, _SHARED_EXPERT_DEFAULT):
        raise HeterogeneousConfigError(
            f"{where}: `ffn.moe.shared_expert_intermediate_dim`={shared!r} is refused: GPT-OSS has no shared expert "
            f"(the writer leaves the field at its default, {_SHARED_EXPERT_DEFAULT})."
        )
    layer = {}
    for field, attribute in _GPT_OSS_MOE_FIELDS.items():
        value = moe.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise HeterogeneousConfigError(f"{where}: `ffn.moe.{field}`={value!r} must be a positive integer.")
        layer[attribute] = value
    return layer


# How a block translates, by the registry's `ArchitectureSpec.anymodel_blocks` of the config's model type.
_BLOCK_TRANSLATORS: dict[str, Callable[[Any, int, dict[str, Any]], dict[str, Any]]] = {
    "dense": _dense_block,
    "gpt_oss": _gpt_oss_block,
}


def anymodel_model_types() -> list[str]:
    """The model types whose AnyModel `block_configs` are read (declared by the registry rows of stock architectures;
    the checkpoint families read their own `block_configs`)."""
    from ..supported_models import SUPPORTED_ARCHITECTURES
    from . import CHECKPOINT_FORMATS

    return sorted(
        model_type
        for model_type, row in SUPPORTED_ARCHITECTURES.items()
        if row.anymodel_blocks and model_type not in CHECKPOINT_FORMATS
    )


def _block_translator(config: Any) -> Callable[[Any, int, dict[str, Any]], dict[str, Any]] | None:
    from ..supported_models import get_architecture
    from . import CHECKPOINT_FORMATS

    architecture = get_architecture(config)
    if architecture is None or architecture.anymodel_blocks is None or config.model_type in CHECKPOINT_FORMATS:
        return None
    return _BLOCK_TRANSLATORS[architecture.anymodel_blocks]


def anymodel_per_layer_config(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The config's init arguments with `per_layer_config` derived from AnyModel's `block_configs`.

    Called while a stock config is made (`config` holds its declared fields; `kwargs` the others, `block_configs`
    among them). Configs of other model types are returned unchanged. A `per_layer_config` next to the blocks (a model
    saved by Transformers writes both) must say the same as the blocks.
    """
    translate = _block_translator(config)
    if translate is None:
        return kwargs
    blocks = kwargs["block_configs"]
    if not isinstance(blocks, list) or len(blocks) != config.num_hidden_layers:
        raise HeterogeneousConfigError(
            f"{config.model_type} (AnyModel): `block_configs` must hold one block per layer "
            f"({config.num_hidden_layers}), got {blocks!r:.200}."
        )
    per_layer = {}
    for layer_idx, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise HeterogeneousConfigError(
                f"{config.model_type} (AnyModel) layer {layer_idx}: a block is a mapping, got {block!r}."
            )
        overrides = {
            name: value
            for name, value in translate(config, layer_idx, block).items()
            if name == "skip" or value != getattr(config, name, None)  # upstream drops values equal to the global
        }
        if overrides:
            per_layer[layer_idx] = overrides
    given = kwargs.get("per_layer_config")
    per_layer = _normalized(per_layer)
    if given is not None and _normalized(given) != per_layer:
        raise HeterogeneousConfigError(
            f"{config.model_type} (AnyModel): `per_layer_config` {given!r:.200} does not say what `block_configs` says "
            f"({per_layer!r:.200}); give one of them."
        )
    kwargs = {**kwargs, "per_layer_config": per_layer}
    if any("num_local_experts" in overrides for overrides in per_layer.values()):
        quantization = mxfp4_dequantized_on_load(kwargs.get("quantization_config"))
        if quantization is not None:
            kwargs["quantization_config"] = quantization
    return kwargs


def _normalized(per_layer_config: dict[Any, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        int(layer_idx): {name: sorted(value) if name == "skip" else value for name, value in overrides.items()}
        for layer_idx, overrides in per_layer_config.items()
        if overrides
    }


def is_anymodel_config(config: Any) -> bool:
    """A config of a model type this module reads that carries AnyModel's `block_configs`."""
    return _block_translator(config) is not None and getattr(config, "block_configs", None) is not None


def anymodel_canonical_dict(config: Any) -> dict[str, Any]:
    """The same model as a stock config dict: `per_layer_config` without the `block_configs` it came from, and the
    stock causal-LM class in `architectures` (AnyModel writes its own, e.g. `DeciGptOssForCausalLM`)."""
    from ...models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    output = config.to_dict()
    output.pop("block_configs")
    output["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return output
