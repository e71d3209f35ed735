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
"""Tiny Nemotron-NAS and DeciLM checkpoints in their real on-disk formats, written without the code under test.

`config.json` has the keys those repositories ship (`model_type`, `architectures`, `auto_map` to remote code,
`block_configs` with every field, null global `intermediate_size` / `num_key_value_heads`), and the weights are
random tensors with the real names and shapes (the releases' model cards and remote `modeling_decilm.py`), written with `safetensors` directly: sharded with
`model.safetensors.index.json`, or one `model.safetensors`. Each layer's expected dimensions are written out as
literals (the `ffn_mult` rounding worked by hand), never computed by the package.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from transformers import AutoModelForCausalLM
from transformers.testing_utils import CaptureLogger, LoggingLevel
from transformers.utils import logging

from .reference import LayerSpec


HIDDEN = 512  # >= 512 so that `ffn_mult` rounding to multiples of 256 gives distinct widths
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
VOCAB = 64
RMS_EPS = 1e-5
ROPE_THETA = 500000.0
LLAMA3_SCALING = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
AUTO_MAP = {
    "AutoConfig": "configuration_decilm.DeciLMConfig",
    "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
}


def attention(n_heads_in_group=None, no_op=False, replace_with_linear=False, **extra):
    """An `attention` block entry with every field of the released format."""
    return {
        "n_heads_in_group": n_heads_in_group,
        "no_op": no_op,
        "num_sink_tokens": None,
        "replace_with_linear": replace_with_linear,
        "sparsify": None,
        "unshifted_sink": False,
        "use_prefill_window_in_sink_attention": False,
        "window_length": None,
        **extra,
    }


def ffn(ffn_mult=None, no_op=False, replace_with_linear=False, **extra):
    return {
        "ffn_mult": ffn_mult,
        "no_op": no_op,
        "replace_with_linear": replace_with_linear,
        "sparsify": None,
        **extra,
    }


@dataclass(frozen=True)
class Layer:
    """One layer: its block entry and what it must become. `kv_heads` / `ffn_width`: 0 = no-op, -1 = linear."""

    block: dict
    kv_heads: int
    ffn_width: int


NO_OP, LINEAR = 0, -1

# Every layer kind. Widths by hand: int(2 * mult * 512 / 3) rounded up to 256: 2.625 -> 896 -> 1024,
# 1.0 -> 341 -> 512, 2.0 -> 682 -> 768, 0.5 -> 170 -> 256.
NEMOTRON_LAYERS = (
    Layer({"attention": attention(1), "ffn": ffn(2.625)}, kv_heads=4, ffn_width=1024),
    Layer({"attention": attention(2), "ffn": ffn(replace_with_linear=True)}, kv_heads=2, ffn_width=LINEAR),
    Layer({"attention": attention(no_op=True), "ffn": ffn(1.0)}, kv_heads=NO_OP, ffn_width=512),
    Layer({"attention": attention(replace_with_linear=True), "ffn": ffn(2.0)}, kv_heads=LINEAR, ffn_width=768),
    Layer({"attention": attention(4), "ffn": ffn(no_op=True)}, kv_heads=1, ffn_width=NO_OP),
    Layer({"attention": attention(no_op=True), "ffn": ffn(no_op=True)}, kv_heads=NO_OP, ffn_width=NO_OP),
    Layer(
        {"attention": attention(replace_with_linear=True), "ffn": ffn(replace_with_linear=True)},
        kv_heads=LINEAR,
        ffn_width=LINEAR,
    ),
    Layer({"attention": attention(2), "ffn": ffn(0.5)}, kv_heads=2, ffn_width=256),
)


def nemotron_config(layers=NEMOTRON_LAYERS) -> dict:
    """A `config.json` shaped as Llama-3.1-Nemotron-51B's (smaller numbers, same keys)."""
    return {
        "architectures": ["DeciLMForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": AUTO_MAP,
        "block_configs": [layer.block for layer in layers],
        "bos_token_id": None,  # no special tokens: greedy generation runs its full length
        "eos_token_id": None,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": None,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "nemotron-nas",
        "num_attention_heads": HEADS,
        "num_hidden_layers": len(layers),
        "num_key_value_heads": None,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": LLAMA3_SCALING,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


class RandomWeights:
    """Random bfloat16 tensors of unit-scale effect (see `conftest.randomize_weights`), drawn from one seed."""

    def __init__(self, hidden: int, seed: int) -> None:
        self.hidden = hidden
        self.generator = torch.Generator().manual_seed(seed)

    def matrix(self, rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=self.generator) / math.sqrt(cols)).to(torch.bfloat16)

    def norm(self) -> torch.Tensor:
        return (1.0 + 0.2 * torch.randn(self.hidden, generator=self.generator)).to(torch.bfloat16)

    def embedding(self, vocab: int) -> torch.Tensor:
        return torch.randn(vocab, self.hidden, generator=self.generator).to(torch.bfloat16)

    def attention(self, prefix: str, kv_width: int) -> dict[str, torch.Tensor]:
        """Llama attention with its input norm, under `prefix` (`model.layers.{i}`)."""
        hidden = self.hidden
        return {
            f"{prefix}.input_layernorm.weight": self.norm(),
            f"{prefix}.self_attn.q_proj.weight": self.matrix(hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": self.matrix(kv_width, hidden),
            f"{prefix}.self_attn.v_proj.weight": self.matrix(kv_width, hidden),
            f"{prefix}.self_attn.o_proj.weight": self.matrix(hidden, hidden),
        }

    def mlp(self, prefix: str, width: int) -> dict[str, torch.Tensor]:
        """Llama SwiGLU MLP with its norm."""
        hidden = self.hidden
        return {
            f"{prefix}.post_attention_layernorm.weight": self.norm(),
            f"{prefix}.mlp.gate_proj.weight": self.matrix(width, hidden),
            f"{prefix}.mlp.up_proj.weight": self.matrix(width, hidden),
            f"{prefix}.mlp.down_proj.weight": self.matrix(hidden, width),
        }

    def head(self, vocab: int) -> dict[str, torch.Tensor]:
        return {"model.norm.weight": self.norm(), "lm_head.weight": self.matrix(vocab, self.hidden)}


# fp8 KV-cache scales, one float32 scalar per attention layer, as FP8 releases carry them (vLLM `model_executor/models/utils.py` remaps them).
K_SCALE, V_SCALE = 0.0625, 0.03125


def kv_scales(prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.self_attn.k_scale": torch.tensor(K_SCALE, dtype=torch.float32),
        f"{prefix}.self_attn.v_scale": torch.tensor(V_SCALE, dtype=torch.float32),
    }


def nemotron_tensors(layers=NEMOTRON_LAYERS, seed: int = 0, with_kv_scales: bool = False) -> dict[str, torch.Tensor]:
    """Random bfloat16 weights named and shaped as in the released checkpoints (their `model.safetensors.index.json`); with
    `with_kv_scales`, each attention layer's fp8 KV-cache scales too (the KV-cache part of an FP8 release)."""
    weights = RandomWeights(HIDDEN, seed)
    tensors = {"model.embed_tokens.weight": weights.embedding(VOCAB)}
    for idx, layer in enumerate(layers):
        prefix = f"model.layers.{idx}"
        if layer.kv_heads == LINEAR:
            tensors[f"{prefix}.input_layernorm.weight"] = weights.norm()
            tensors[f"{prefix}.self_attn.linear_attn.weight"] = weights.matrix(HIDDEN, HIDDEN)
        elif layer.kv_heads != NO_OP:
            tensors.update(weights.attention(prefix, layer.kv_heads * HEAD_DIM))
            if with_kv_scales:
                tensors.update(kv_scales(prefix))
        if layer.ffn_width == LINEAR:
            tensors[f"{prefix}.post_attention_layernorm.weight"] = weights.norm()
            tensors[f"{prefix}.mlp.linear_mlp.weight"] = weights.matrix(HIDDEN, HIDDEN)
        elif layer.ffn_width != NO_OP:
            tensors.update(weights.mlp(prefix, layer.ffn_width))
    tensors.update(weights.head(VOCAB))
    return tensors


def nemotron_specs(layers=NEMOTRON_LAYERS, activations: dict[int, str] | None = None) -> list[LayerSpec]:
    return [
        LayerSpec(
            activation=(activations or {}).get(idx, "silu"),
            attention=layer.kv_heads > 0,
            mlp=layer.ffn_width > 0,
            linear_attention=layer.kv_heads == LINEAR,
            linear_mlp=layer.ffn_width == LINEAR,
            num_heads=HEADS,
            num_kv_heads=max(layer.kv_heads, 1),
            head_dim=HEAD_DIM,
            rope_theta=ROPE_THETA,
            rms_eps=RMS_EPS,
            rope_scaling=LLAMA3_SCALING,
        )
        for idx, layer in enumerate(layers)
    ]


def write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor], num_shards: int) -> Path:
    """Writes `config.json` and the weights: one `model.safetensors`, or `num_shards` shards plus an index that
    splits the layers in order, as `save_pretrained` of the original code did."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    metadata = {"format": "pt"}
    if num_shards == 1:
        save_file(tensors, path / "model.safetensors", metadata=metadata)
        return path
    names = list(tensors)
    per_shard = math.ceil(len(names) / num_shards)
    weight_map = {}
    for shard_idx in range(num_shards):
        shard_name = f"model-{shard_idx + 1:05d}-of-{num_shards:05d}.safetensors"
        shard = {name: tensors[name] for name in names[shard_idx * per_shard : (shard_idx + 1) * per_shard]}
        save_file(shard, path / shard_name, metadata=metadata)
        weight_map.update(dict.fromkeys(shard, shard_name))
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return path


# NVIDIA Model-Optimizer's DeciLM block schemas, written with `dataclasses.asdict` (every field, most null):
# "nov2025" is `modelopt/torch/_compress/decilm/deci_lm_hf_code/block_config.py`, "jan2026"
# `modelopt/torch/puzzletron/block_config.py`. Each dataclass's `__post_init__` nulls the fields a no-op, linear,
# Mamba or MoE sub-block does not use, and these writers do the same.
MODELOPT_SCHEMAS = ("nov2025", "jan2026")


def modelopt_attention(schema: str, kv_heads: int) -> dict:
    """An `attention` entry for a layer whose KV heads are `kv_heads` (NO_OP / LINEAR for those kinds)."""
    no_op, linear = kv_heads == NO_OP, kv_heads == LINEAR
    entry = {"no_op": no_op, "replace_with_linear": linear, "sparsify": None, "weights_precision": "bf16"}
    if schema == "nov2025":
        unused = no_op or linear  # `AttentionConfig.__post_init__` nulls these for no-op and linear attention
        return {
            **entry,
            "n_heads_in_group": None if unused else HEADS // kv_heads,
            "window_length": None,
            "num_sink_tokens": None,
            "use_prefill_window_in_sink_attention": None if unused else False,
            "unshifted_sink": None if unused else False,
            "mamba": None,
            "llama4": None,
        }
    # Jan 2026 nulls `num_key_value_heads` only for no-op (and Mamba) attention; a linear one still asserts it set.
    return {
        **entry,
        "num_key_value_heads": None if no_op else HEADS if linear else kv_heads,
        "llama4": None,
        "mamba": None,
    }


def modelopt_ffn(schema: str, width: int, hidden_act: str = "silu") -> dict:
    """An `ffn` entry for a layer whose FFN width is `width` (NO_OP / LINEAR for those kinds)."""
    no_op, linear = width == NO_OP, width == LINEAR
    entry = {"no_op": no_op, "replace_with_linear": linear, "sparsify": None, "weights_precision": "bf16", "moe": None}
    if schema == "nov2025":
        unused = no_op or linear  # `FFNConfig.__post_init__` nulls these for no-op and linear FFNs
        return {
            **entry,
            "gated": None if unused else True,
            "hidden_act": None if unused else hidden_act,
            "intermediate_size": None if unused else width,
        }
    # Jan 2026 nulls `intermediate_size` only for a no-op FFN; a linear one still asserts it set.
    return {**entry, "intermediate_size": None if no_op else 256 if linear else width}


def modelopt_config(schema: str, layers=NEMOTRON_LAYERS, activations: dict[int, str] | None = None) -> dict:
    """`config.json` as Model-Optimizer's `DeciLMConfig.to_dict` writes it: Llama fields without the per-layer ones
    (`intermediate_size`, `num_key_value_heads`, `hidden_act`, `sliding_window` are deleted), plus its own top-level
    fields at the values its writer gives them."""
    config = {
        key: value
        for key, value in nemotron_config(layers).items()
        if key not in ("intermediate_size", "num_key_value_heads", "hidden_act")
    }
    config["block_configs"] = [
        {
            "attention": modelopt_attention(schema, layer.kv_heads),
            "ffn": modelopt_ffn(schema, layer.ffn_width, (activations or {}).get(idx, "silu")),
            "parallel_blocks": None,
        }
        for idx, layer in enumerate(layers)
    ]
    config.update(
        {
            "position_embedding_type": "rope",
            "llama4_attn_implementation": "sdpa",  # set at init to the kernel available, then saved
            "block_return_only_hidden_states": False,
            "router_aux_loss_coef": 0.01,
            "router_z_loss_coef": 0.0,
            "output_router_logits": False,
            "head_dim": HEAD_DIM,
            "o_proj_bias": False,
            "transformers_version": "4.51.3",
        }
    )
    return config


def write_modelopt_checkpoint(path: Path, schema: str, activations: dict[int, str] | None = None) -> Path:
    config = modelopt_config(schema, activations=activations)
    return write_checkpoint(path, config, nemotron_tensors(), num_shards=3)


# AnyModel's weight layout (Model-Optimizer `puzzletron/tools/checkpoint_utils_hf.py`: `SAFETENSORS_SUBBLOCKS_DIR_NAME`,
# `NON_LAYER_MODULE_TO_FILE_TYPE`, `MODULE_WITHIN_LAYER_TO_FILE_TYPE`): one file per sub-block under
# `subblocks_safetensors/`, the index at the root naming `subblocks_safetensors/<file>`.
SUBBLOCK_FILES = {
    "model.embed_tokens": "embeddings",
    "model.norm": "lm_head",
    "lm_head": "lm_head",
}
SUBBLOCK_OF_LAYER_MEMBER = {
    "input_layernorm": "attention",
    "self_attn": "attention",
    "post_attention_layernorm": "ffn",
    "mlp": "ffn",
}


def _subblock_file(name: str) -> str:
    module = name.rsplit(".", 1)[0]
    if module in SUBBLOCK_FILES:
        return SUBBLOCK_FILES[module]
    _, _, layer_idx, member, *_ = name.split(".")  # model.layers.{i}.{member}...
    return f"block_{layer_idx}_{SUBBLOCK_OF_LAYER_MEMBER[member]}"


def write_subblocks_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """`config.json`, the weights grouped per sub-block under `subblocks_safetensors/`, and the root index."""
    (path / "subblocks_safetensors").mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    files: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        files.setdefault(f"subblocks_safetensors/{_subblock_file(name)}.safetensors", {})[name] = tensor
    for file_name, file_tensors in files.items():
        save_file(file_tensors, path / file_name, metadata={"format": "pt"})
    weight_map = {name: file_name for file_name, file_tensors in files.items() for name in file_tensors}
    index = {"metadata": {"format": "pt"}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return path


def anymodel_llama_config(layers=NEMOTRON_LAYERS) -> dict:
    """An AnyModel output of a Llama parent: the parent's config as it was (`model_type: llama`, its own global
    `intermediate_size` / `num_key_value_heads`), plus `block_configs` in the Jan 2026 schema (`converter/base.py`)."""
    config = {
        key: value
        for key, value in nemotron_config(layers).items()
        if key not in ("auto_map", "block_configs", "intermediate_size", "num_key_value_heads")
    }
    config.update(
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "intermediate_size": 1024,
            "num_key_value_heads": HEADS,
            "head_dim": HEAD_DIM,
            "block_configs": [
                {
                    "attention": modelopt_attention("jan2026", layer.kv_heads),
                    "ffn": modelopt_ffn("jan2026", layer.ffn_width),
                    "parallel_blocks": None,
                }
                for layer in layers
            ],
        }
    )
    return config


def write_anymodel_llama_checkpoint(path: Path) -> Path:
    return write_subblocks_checkpoint(path, anymodel_llama_config(), nemotron_tensors())


def write_nemotron_checkpoint(
    path: Path, layers=NEMOTRON_LAYERS, num_shards: int = 3, with_kv_scales: bool = False
) -> Path:
    tensors = nemotron_tensors(layers, with_kv_scales=with_kv_scales)
    return write_checkpoint(path, nemotron_config(layers), tensors, num_shards)


def load_logged(path: Path, **kwargs) -> tuple[torch.nn.Module, dict, str]:
    """`AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)` as a user runs it, plus what the
    package logged about the checkpoint's unused tensors (at info level)."""
    with LoggingLevel(logging.INFO), CaptureLogger(logging.get_logger(UNUSED_TENSORS_LOGGER)) as captured:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    return model.eval(), info, captured.out


UNUSED_TENSORS_LOGGER = "transformers.heterogeneity.checkpoint_formats.loading_utils"


# DeciLM-7B's shape in miniature: KV heads per layer, dynamic NTK rope; a short trained length so tests cross it.
DECI_KV_HEADS = (4, 2, 1, 2)
DECI_HIDDEN = 128
DECI_INTERMEDIATE = 256
DECI_MAX_POSITIONS = 16
DECI_ROPE_THETA = 10000.0
DECI_RMS_EPS = 1e-6


def deci_config() -> dict:
    """A `config.json` shaped as DeciLM-7B's."""
    return {
        "architectures": ["DeciLMForCausalLM"],
        "auto_map": AUTO_MAP,
        "bos_token_id": None,
        "eos_token_id": None,
        "hidden_act": "silu",
        "hidden_size": DECI_HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": DECI_INTERMEDIATE,
        "max_position_embeddings": DECI_MAX_POSITIONS,
        "model_type": "deci",
        "num_attention_heads": HEADS,
        "num_hidden_layers": len(DECI_KV_HEADS),
        "num_key_value_heads_per_layer": list(DECI_KV_HEADS),
        "rms_norm_eps": DECI_RMS_EPS,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "rope_theta": DECI_ROPE_THETA,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.35.2",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def deci_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    weights = RandomWeights(DECI_HIDDEN, seed)
    head_dim = DECI_HIDDEN // HEADS
    tensors = {"model.embed_tokens.weight": weights.embedding(VOCAB)}
    for idx, kv_heads in enumerate(DECI_KV_HEADS):
        tensors.update(weights.attention(f"model.layers.{idx}", kv_heads * head_dim))
        tensors.update(weights.mlp(f"model.layers.{idx}", DECI_INTERMEDIATE))
    tensors.update(weights.head(VOCAB))
    return tensors


def deci_specs() -> list[LayerSpec]:
    scaling = {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": DECI_MAX_POSITIONS}
    return [
        LayerSpec(
            num_heads=HEADS,
            num_kv_heads=kv_heads,
            head_dim=DECI_HIDDEN // HEADS,
            rope_theta=DECI_ROPE_THETA,
            rms_eps=DECI_RMS_EPS,
            rope_scaling=scaling,
        )
        for kv_heads in DECI_KV_HEADS
    ]


def write_deci_checkpoint(path: Path) -> Path:
    return write_checkpoint(path, deci_config(), deci_tensors(), num_shards=1)
