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
"""Tiny Nemotron-H Puzzle checkpoints in the released format, written without the code under test.

The format (the release's remote `configuration_nemotron_h_puzzle.py` block dataclasses, vLLM's
and SGLang's readers): `block_configs` holds one flat entry per block keyed by `block_type`, null fields dropped; every
field a block sets is deleted from the global config and listed in `blockwise_members`; `hybrid_override_pattern` is
written, derived from the block types; MTP blocks come in `mtp_block_configs` with `num_nextn_predict_layers` and
`mtp.*` tensors. Tensors: NemotronH's released names (`backbone.` prefix, one `up_proj` / `down_proj` per expert,
LatentMoE's `mixer.fc1_latent_proj` / `fc2_latent_proj`), bfloat16, two safetensors shards and an index.

Two variants: `plain` (no LatentMoE, no MTP) and `latent_mtp` (LatentMoE on some MoE blocks, MTP layers). Every shape
is written out here from the block entries, never computed by the package.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .checkpoints import write_checkpoint


HIDDEN = 64
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
MAMBA_HEADS, MAMBA_HEAD_DIM, GROUPS, CONV_KERNEL = 4, 16, 2, 4
VOCAB = 64

# The NemotronH globals the release keeps (every field of `BLOCKS` is deleted from them).
GLOBALS = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "mamba_num_heads": MAMBA_HEADS,
    "mamba_head_dim": MAMBA_HEAD_DIM,
    "n_groups": GROUPS,
    "conv_kernel": CONV_KERNEL,
    "chunk_size": 8,
    "expand": 2,
    "mamba_hidden_act": "silu",
    "mlp_hidden_act": "relu2",
    "n_shared_experts": 1,
    "moe_shared_expert_overlap": True,
    "layer_norm_epsilon": 1e-5,
    "residual_in_fp32": False,
    "rescale_prenorm_residual": True,
    "use_mamba_kernels": True,
    "bos_token_id": None,  # no special tokens: greedy generation runs its full length
    "eos_token_id": None,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}


def _moe(experts, top_k, width, shared, **optional):
    return {
        "block_type": "moe",
        "n_routed_experts": experts,
        "num_experts_per_tok": top_k,
        "moe_intermediate_size": width,
        "moe_shared_expert_intermediate_size": shared,
        **optional,
    }


# Every block type and every per-block field the release writes; routing fields on one block only (the others get
# NemotronH's defaults: the globals are deleted).
PLAIN_BLOCKS = [
    {"block_type": "mamba", "ssm_state_size": 8},
    _moe(4, 2, 16, 48),
    {"block_type": "attention"},
    _moe(6, 3, 24, 32, routed_scaling_factor=2.5, n_group=2, topk_group=1, norm_topk_prob=False),
    {"block_type": "mamba", "ssm_state_size": 16},
    {"block_type": "mlp", "intermediate_size": 40},
    _moe(4, 2, 16, 48),
]
# LatentMoE on blocks 1 and 6 (widths 32 and 24), none on block 3.
LATENT_BLOCKS = [
    {**block, "moe_latent_size": latent} if latent else block
    for block, latent in zip(PLAIN_BLOCKS, [None, 32, None, None, None, None, 24])
]
MTP_BLOCKS = [{"block_type": "attention"}, _moe(4, 2, 16, 48, moe_latent_size=32)]
PATTERN = "ME*EM-E"
# NemotronH's names of the block types, by hand from PATTERN.
LAYER_TYPES = ["linear_attention", "moe", "full_attention", "moe", "linear_attention", "mlp", "moe"]

VARIANTS = {
    "plain": {"blocks": PLAIN_BLOCKS, "mtp_blocks": []},
    "latent_mtp": {"blocks": LATENT_BLOCKS, "mtp_blocks": MTP_BLOCKS},
}


def blockwise_members(variant: str) -> list[str]:
    blocks = VARIANTS[variant]["blocks"] + VARIANTS[variant]["mtp_blocks"]
    return sorted({name for block in blocks for name in block})


def puzzle_config(variant: str = "plain") -> dict:
    blocks, mtp_blocks = VARIANTS[variant]["blocks"], VARIANTS[variant]["mtp_blocks"]
    config = {
        "architectures": ["NemotronHPuzzleForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_nemotron_h_puzzle.NemotronHPuzzleConfig",
            "AutoModelForCausalLM": "modeling_nemotron_h_puzzle.NemotronHPuzzleForCausalLM",
        },
        "model_type": "nemotron_h_puzzle",
        "block_configs": [dict(block) for block in blocks],
        "mtp_block_configs": [dict(block) for block in mtp_blocks],
        "blockwise_members": blockwise_members(variant),
        "hybrid_override_pattern": PATTERN,
        "num_nextn_predict_layers": 1 if mtp_blocks else 0,
        **GLOBALS,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.1",
    }
    if mtp_blocks:
        config["mtp_hybrid_override_pattern"] = "*E"
    return config


def _block_shapes(prefix: str, block: dict) -> dict[str, tuple[int, ...]]:
    """The tensors of one block (`{prefix}norm.weight` and `{prefix}mixer.*`), as the release names them."""
    shapes = {prefix + "norm.weight": (HIDDEN,)}
    mixer = prefix + "mixer."
    kind = block["block_type"]
    if kind == "mamba":
        inner, state = MAMBA_HEADS * MAMBA_HEAD_DIM, block["ssm_state_size"]
        conv_dim = inner + 2 * GROUPS * state
        shapes[mixer + "in_proj.weight"] = (inner + conv_dim + MAMBA_HEADS, HIDDEN)
        shapes[mixer + "conv1d.weight"] = (conv_dim, 1, CONV_KERNEL)
        shapes[mixer + "conv1d.bias"] = (conv_dim,)
        for name in ("dt_bias", "A_log", "D"):
            shapes[mixer + name] = (MAMBA_HEADS,)
        shapes[mixer + "norm.weight"] = (inner,)
        shapes[mixer + "out_proj.weight"] = (HIDDEN, inner)
    elif kind == "attention":
        shapes[mixer + "q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[mixer + "k_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[mixer + "v_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[mixer + "o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
    elif kind == "mlp":
        shapes[mixer + "up_proj.weight"] = (block["intermediate_size"], HIDDEN)
        shapes[mixer + "down_proj.weight"] = (HIDDEN, block["intermediate_size"])
    else:
        experts, width, shared = block["n_routed_experts"], block["moe_intermediate_size"], None
        shared = block["moe_shared_expert_intermediate_size"]
        expert_dim = block.get("moe_latent_size", HIDDEN)  # LatentMoE: experts run in the latent width
        shapes[mixer + "gate.weight"] = (experts, HIDDEN)
        shapes[mixer + "gate.e_score_correction_bias"] = (experts,)
        for expert in range(experts):
            shapes[mixer + f"experts.{expert}.up_proj.weight"] = (width, expert_dim)
            shapes[mixer + f"experts.{expert}.down_proj.weight"] = (expert_dim, width)
        shapes[mixer + "shared_experts.up_proj.weight"] = (shared, HIDDEN)
        shapes[mixer + "shared_experts.down_proj.weight"] = (HIDDEN, shared)
        if "moe_latent_size" in block:
            shapes[mixer + "fc1_latent_proj.weight"] = (block["moe_latent_size"], HIDDEN)
            shapes[mixer + "fc2_latent_proj.weight"] = (HIDDEN, block["moe_latent_size"])
    return shapes


def tensor_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    shapes = {"backbone.embeddings.weight": (VOCAB, HIDDEN)}
    for idx, block in enumerate(VARIANTS[variant]["blocks"]):
        shapes.update(_block_shapes(f"backbone.layers.{idx}.", block))
    # MTP layers, modelled on the NemotronH MTP layout read by vLLM / SGLang (`enorm`, `hnorm`, `eh_proj`, then the
    # blocks, `final_layernorm`); the loader treats every `mtp.*` tensor alike, whatever its name.
    mtp_blocks = VARIANTS[variant]["mtp_blocks"]
    if mtp_blocks:
        shapes["mtp.layers.0.enorm.weight"] = (HIDDEN,)
        shapes["mtp.layers.0.hnorm.weight"] = (HIDDEN,)
        shapes["mtp.layers.0.eh_proj.weight"] = (HIDDEN, 2 * HIDDEN)
        for idx, block in enumerate(mtp_blocks):
            shapes.update(_block_shapes(f"mtp.layers.{idx}.", block))
        shapes[f"mtp.layers.{len(mtp_blocks) - 1}.final_layernorm.weight"] = (HIDDEN,)
    shapes["backbone.norm_f.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator)
    if name.endswith("A_log"):
        value = torch.log(1.0 + 3.0 * torch.rand(shape, generator=generator))
    elif name.endswith(("norm.weight", "norm_f.weight", ".D")):
        value = 1.0 + 0.2 * noise
    elif name.endswith(("bias", "dt_bias")):
        value = 0.2 * noise
    elif len(shape) == 1 or "embeddings" in name:
        value = noise
    else:
        value = noise / math.sqrt(shape[-1])
    return value.to(torch.bfloat16)


def puzzle_tensors(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: _random_tensor(name, shape, generator) for name, shape in tensor_shapes(variant).items()}


def write_puzzle_checkpoint(directory: Path, variant: str = "plain", config: dict | None = None) -> Path:
    """Writes `config.json`, two safetensors shards and their index; returns `directory`."""
    return write_checkpoint(directory, config or puzzle_config(variant), puzzle_tensors(variant), num_shards=2)


def block_values(variant: str) -> dict[int, dict]:
    """Each block's own fields (what its homogeneous reference config gets on top of `GLOBALS`)."""
    return {
        idx: {name: value for name, value in block.items() if name != "block_type"}
        for idx, block in enumerate(VARIANTS[variant]["blocks"])
    }


def to_model_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's backbone tensors under the model's names, by hand: `backbone.` -> `model.`, experts stacked;
    the MTP tensors left out (upstream NemotronH has no MTP layers)."""
    converted, experts = {}, {}
    for name, tensor in state.items():
        if name.startswith("mtp."):
            continue
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
