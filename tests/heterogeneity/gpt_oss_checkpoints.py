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
"""A tiny gpt-oss-puzzle checkpoint in its on-disk format, written without the code under test.

`config.json` has the keys of the release (`model_type: gpt_oss_puzzle`, `architectures`, `auto_map` to remote code,
GPT-OSS globals and `block_configs` with each layer's `num_local_experts` and `sliding_window`), and the weights are
random tensors with the GPT-OSS names and shapes plus the fp8 KV-cache scales of every attention layer
(`model.layers.{i}.self_attn.k_scale` / `v_scale`), sharded with `model.safetensors.index.json`. The experts are
plain tensors, or MXFP4 blocks and scales as in the release (`mxfp4=True`, with its `quantization_config`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import write_checkpoint, write_subblocks_checkpoint


# The release's pattern in miniature: full, short-window and long-window layers; 4 or 2 experts.
PUZZLE_BLOCKS = (
    {"num_local_experts": 4, "sliding_window": None},
    {"num_local_experts": 4, "sliding_window": 4},
    {"num_local_experts": 2, "sliding_window": 4},
    {"num_local_experts": 2, "sliding_window": 8},
)
# Tiny GPT-OSS globals, shared with `test_gpt_oss.py`.
GPT_OSS_GLOBALS = {
    "hidden_size": 64,
    "intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 100,
    "sliding_window": 4,
}
PUZZLE_GLOBALS = GPT_OSS_GLOBALS
# Written out by hand from PUZZLE_BLOCKS (never computed by the package).
PUZZLE_LAYER_TYPES = ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention"]
PUZZLE_PER_LAYER = {2: {"num_local_experts": 2}, 3: {"num_local_experts": 2, "sliding_window": 8}}


def puzzle_config() -> dict:
    return {
        "architectures": ["GptOssPuzzleForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_gpt_oss_puzzle.GptOssPuzzleConfig",
            "AutoModelForCausalLM": "modeling_gpt_oss_puzzle.GptOssPuzzleForCausalLM",
        },
        "model_type": "gpt_oss_puzzle",
        "block_configs": [dict(block) for block in PUZZLE_BLOCKS],
        **PUZZLE_GLOBALS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000.0,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": False,
        },
        "attention_bias": True,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.55.0",
    }


def puzzle_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden, width = PUZZLE_GLOBALS["hidden_size"], PUZZLE_GLOBALS["intermediate_size"]
    heads, kv_heads, head_dim = 4, 2, 16

    def random(*shape):
        return (torch.randn(shape, generator=generator) * 0.05).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": random(PUZZLE_GLOBALS["vocab_size"], hidden)}
    for layer_idx, block in enumerate(PUZZLE_BLOCKS):
        prefix, experts = f"model.layers.{layer_idx}.", block["num_local_experts"]
        tensors.update(
            {
                f"{prefix}input_layernorm.weight": 1 + random(hidden),
                f"{prefix}self_attn.q_proj.weight": random(heads * head_dim, hidden),
                f"{prefix}self_attn.q_proj.bias": random(heads * head_dim),
                f"{prefix}self_attn.k_proj.weight": random(kv_heads * head_dim, hidden),
                f"{prefix}self_attn.k_proj.bias": random(kv_heads * head_dim),
                f"{prefix}self_attn.v_proj.weight": random(kv_heads * head_dim, hidden),
                f"{prefix}self_attn.v_proj.bias": random(kv_heads * head_dim),
                f"{prefix}self_attn.o_proj.weight": random(hidden, heads * head_dim),
                f"{prefix}self_attn.o_proj.bias": random(hidden),
                f"{prefix}self_attn.sinks": random(heads),
                f"{prefix}self_attn.k_scale": torch.tensor(0.0625, dtype=torch.float32),
                f"{prefix}self_attn.v_scale": torch.tensor(0.03125, dtype=torch.float32),
                f"{prefix}post_attention_layernorm.weight": 1 + random(hidden),
                f"{prefix}mlp.router.weight": random(experts, hidden),
                f"{prefix}mlp.router.bias": random(experts),
                f"{prefix}mlp.experts.gate_up_proj": random(experts, hidden, 2 * width),
                f"{prefix}mlp.experts.gate_up_proj_bias": random(experts, 2 * width),
                f"{prefix}mlp.experts.down_proj": random(experts, width, hidden),
                f"{prefix}mlp.experts.down_proj_bias": random(experts, hidden),
            }
        )
    tensors["model.norm.weight"] = 1 + random(hidden)
    tensors["lm_head.weight"] = random(PUZZLE_GLOBALS["vocab_size"], hidden)
    return tensors


def to_mxfp4(tensors: dict[str, torch.Tensor], seed: int = 3) -> dict[str, torch.Tensor]:
    """The release's expert layout: each expert matrix as MXFP4 `{proj}_blocks` (uint8, two fp4 values per byte, 32
    values per block, shape `[experts, rows, cols / 32, 16]`) and `{proj}_scales` (uint8 exponents biased by 127,
    `[experts, rows, cols / 32]`), rows being the output features. Random codes: the values need not be the plain
    tensors', the test compares against upstream's dequantization of these very bytes."""
    generator = torch.Generator().manual_seed(seed)
    converted = {}
    for name, tensor in tensors.items():
        if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            converted[name] = tensor
            continue
        experts, cols, rows = tensor.shape  # stored transposed: [experts, in_features, out_features]
        converted[f"{name}_blocks"] = torch.randint(
            0, 256, (experts, rows, cols // 32, 16), generator=generator, dtype=torch.uint8
        )
        converted[f"{name}_scales"] = torch.randint(
            122, 128, (experts, rows, cols // 32), generator=generator, dtype=torch.uint8
        )
    return converted


MXFP4_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}


def write_puzzle_checkpoint(path: Path, config: dict | None = None, num_shards: int = 3, mxfp4: bool = False) -> Path:
    tensors = to_mxfp4(puzzle_tensors()) if mxfp4 else puzzle_tensors()
    if mxfp4:
        config = {**(config or puzzle_config()), "quantization_config": MXFP4_CONFIG}
    return write_checkpoint(path, config or puzzle_config(), tensors, num_shards)


# An AnyModel output of a GPT-OSS parent (Model-Optimizer `anymodel/models/gpt_oss/gpt_oss_converter.py`): the parent's
# config (`model_type: gpt_oss`, windows from `layer_types`) plus `block_configs` in the Jan 2026 schema, each FFN a MoE
# whose `shared_expert_intermediate_dim` stays at the dataclass default; weights under `subblocks_safetensors/`.
ANYMODEL_PER_LAYER = {2: {"num_local_experts": 2}, 3: {"num_local_experts": 2}}  # by hand from PUZZLE_BLOCKS


def anymodel_gpt_oss_config() -> dict:
    config = {key: value for key, value in puzzle_config().items() if key not in ("auto_map", "block_configs")}
    config.update(
        {
            "architectures": ["DeciGptOssForCausalLM"],
            "model_type": "gpt_oss",
            "layer_types": list(PUZZLE_LAYER_TYPES),
            "experts_per_token": PUZZLE_GLOBALS["num_experts_per_tok"],
            "block_configs": [
                {
                    "attention": {
                        "no_op": False,
                        "replace_with_linear": False,
                        "sparsify": None,
                        "weights_precision": "bf16",
                        "num_key_value_heads": PUZZLE_GLOBALS["num_key_value_heads"],
                        "llama4": None,
                        "mamba": None,
                    },
                    "ffn": {
                        "no_op": False,
                        "replace_with_linear": False,
                        "sparsify": None,
                        "weights_precision": "bf16",
                        "moe": {
                            "num_local_experts": block["num_local_experts"],
                            "num_experts_per_tok": PUZZLE_GLOBALS["num_experts_per_tok"],
                            "expert_intermediate_dim": PUZZLE_GLOBALS["intermediate_size"],
                            "shared_expert_intermediate_dim": 8192,
                        },
                        "intermediate_size": None,
                    },
                    "parallel_blocks": None,
                }
                for block in PUZZLE_BLOCKS
            ],
        }
    )
    return config


def write_anymodel_gpt_oss_checkpoint(path: Path, mxfp4: bool = False) -> Path:
    """With `mxfp4`, the experts as gpt-oss releases them (and AnyModel keeps them, with the `quantization_config`)."""
    # The parent, gpt-oss, has no fp8 KV-cache scales.
    tensors = {name: tensor for name, tensor in puzzle_tensors().items() if not name.endswith(("k_scale", "v_scale"))}
    config = anymodel_gpt_oss_config()
    if mxfp4:
        tensors, config = to_mxfp4(tensors), {**config, "quantization_config": MXFP4_CONFIG}
    return write_subblocks_checkpoint(path, config, tensors)
