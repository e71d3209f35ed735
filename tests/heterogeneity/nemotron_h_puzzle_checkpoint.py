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
"""A tiny Nemotron-H Puzzle checkpoint in its on-disk format, written without the code under test.

`config.json` is a NemotronH config (`hybrid_override_pattern`, `auto_map` to remote code, null global
`moe_intermediate_size` / `num_experts_per_tok`) plus the assumed `block_configs` (see
`models/nemotron_h_puzzle/configuration_nemotron_h_puzzle.py`). The weights carry NemotronH's released tensor names
(`backbone.` prefix, one `up_proj` / `down_proj` per expert), written with `safetensors` in two shards with an index.
Every shape is written out from the literals below, never computed by the package.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file


HIDDEN = 64
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
MAMBA_HEADS, MAMBA_HEAD_DIM, SSM_STATE, GROUPS, CONV_KERNEL = 4, 16, 8, 2, 4
EXPERTS, SHARED_WIDTH, MLP_WIDTH = 4, 48, 96
VOCAB = 64
PATTERN = "ME*EMEE"
# One entry per block as the release is assumed to write it.
BLOCK_CONFIGS = [
    {"block_type": "mamba"},
    {"block_type": "moe", "moe_intermediate_size": 16, "num_experts_per_tok": 3},
    {"block_type": "attention", "num_key_value_heads": 1},
    {"block_type": "moe", "no_op": True},
    {"block_type": "mamba"},
    {"block_type": "moe", "moe_intermediate_size": 24, "num_experts_per_tok": 2},
    {"block_type": "moe", "moe_intermediate_size": 16, "num_experts_per_tok": 3},
]
# What each block must become, by hand: the most common width (16) and top-k (3) are the globals.
GLOBAL_MOE_WIDTH, GLOBAL_TOP_K = 16, 3
PER_LAYER = {
    1: {"moe_intermediate_size": 16, "num_experts_per_tok": 3},
    2: {"num_key_value_heads": 1},
    3: {"skip": ["mixer"]},
    5: {"moe_intermediate_size": 24, "num_experts_per_tok": 2},
    6: {"moe_intermediate_size": 16, "num_experts_per_tok": 3},
}
BLOCKS = ["linear_attention", "moe", "full_attention", "moe", "linear_attention", "moe", "moe"]


def puzzle_config() -> dict:
    return {
        "architectures": ["NemotronHPuzzleForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_nemotron_h.NemotronHConfig",
            "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM",
        },
        "model_type": "nemotron_h_puzzle",
        "hybrid_override_pattern": PATTERN,
        "block_configs": BLOCK_CONFIGS,
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "intermediate_size": MLP_WIDTH,
        "mamba_num_heads": MAMBA_HEADS,
        "mamba_head_dim": MAMBA_HEAD_DIM,
        "ssm_state_size": SSM_STATE,
        "n_groups": GROUPS,
        "conv_kernel": CONV_KERNEL,
        "chunk_size": 8,
        "n_routed_experts": EXPERTS,
        "moe_intermediate_size": None,
        "num_experts_per_tok": None,
        "moe_shared_expert_intermediate_size": SHARED_WIDTH,
        "mlp_hidden_act": "relu2",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": None,  # no special tokens: greedy generation runs its full length
        "eos_token_id": None,
        "pad_token_id": None,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }


def _tensor_shapes() -> dict[str, tuple[int, ...]]:
    conv_dim = MAMBA_HEADS * MAMBA_HEAD_DIM + 2 * GROUPS * SSM_STATE
    shapes = {"backbone.embeddings.weight": (VOCAB, HIDDEN), "backbone.norm_f.weight": (HIDDEN,)}
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    for idx, (kind, block) in enumerate(zip(PATTERN, BLOCK_CONFIGS)):
        if block.get("no_op"):
            continue
        prefix = f"backbone.layers.{idx}."
        shapes[prefix + "norm.weight"] = (HIDDEN,)
        mixer = prefix + "mixer."
        if kind == "M":
            inner = MAMBA_HEADS * MAMBA_HEAD_DIM
            shapes[mixer + "in_proj.weight"] = (inner + conv_dim + MAMBA_HEADS, HIDDEN)
            shapes[mixer + "conv1d.weight"] = (conv_dim, 1, CONV_KERNEL)
            shapes[mixer + "conv1d.bias"] = (conv_dim,)
            for name in ("dt_bias", "A_log", "D"):
                shapes[mixer + name] = (MAMBA_HEADS,)
            shapes[mixer + "norm.weight"] = (inner,)
            shapes[mixer + "out_proj.weight"] = (HIDDEN, inner)
        elif kind == "*":
            kv = block.get("num_key_value_heads", KV_HEADS)
            shapes[mixer + "q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
            shapes[mixer + "k_proj.weight"] = (kv * HEAD_DIM, HIDDEN)
            shapes[mixer + "v_proj.weight"] = (kv * HEAD_DIM, HIDDEN)
            shapes[mixer + "o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        else:
            width = block["moe_intermediate_size"]
            shapes[mixer + "gate.weight"] = (EXPERTS, HIDDEN)
            shapes[mixer + "gate.e_score_correction_bias"] = (EXPERTS,)
            for expert in range(EXPERTS):
                shapes[mixer + f"experts.{expert}.up_proj.weight"] = (width, HIDDEN)
                shapes[mixer + f"experts.{expert}.down_proj.weight"] = (HIDDEN, width)
            shapes[mixer + "shared_experts.up_proj.weight"] = (SHARED_WIDTH, HIDDEN)
            shapes[mixer + "shared_experts.down_proj.weight"] = (HIDDEN, SHARED_WIDTH)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator)
    if name.endswith("A_log"):
        return torch.log(1.0 + 3.0 * torch.rand(shape, generator=generator))
    if name.endswith(("norm.weight", "norm_f.weight", ".D")):
        return 1.0 + 0.2 * noise
    if name.endswith(("bias", "dt_bias")):
        return 0.2 * noise
    if len(shape) == 1 or "embeddings" in name:
        return noise
    return noise / math.sqrt(shape[-1])


def write_puzzle_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Writes `config.json`, two safetensors shards and their index; returns `directory`."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: _random_tensor(name, shape, generator) for name, shape in _tensor_shapes().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    shards["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    for shard, shard_names in shards.items():
        save_file({name: tensors[name].contiguous() for name in shard_names}, directory / shard, {"format": "pt"})
    index = {
        "metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())},
        "weight_map": {name: shard for shard, shard_names in shards.items() for name in shard_names},
    }
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(puzzle_config(), indent=2))
    return directory


def to_model_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the model's names, by hand: `backbone.` -> `model.`, experts stacked."""
    converted, experts = {}, {}
    for name, tensor in state.items():
        name = name.replace("backbone.", "model.", 1)
        head, found, tail = name.partition(".experts.")
        if found:
            expert, _, proj = tail.partition(".")
            experts.setdefault(f"{head}.experts.{proj.removesuffix('.weight')}", {})[int(expert)] = tensor
        else:
            converted[name] = tensor
    for name, by_expert in experts.items():
        converted[name] = torch.stack([by_expert[e] for e in sorted(by_expert)])
    return converted
