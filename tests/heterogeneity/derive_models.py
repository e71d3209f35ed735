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
"""Tiny parents for the `derive` tests: a Llama with distinct random weights, its byte-level tokenizer, saved.

Nothing here imports `transformers.heterogeneity` (the installed hook activates it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .conftest import randomize_weights


PARENT = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 8,
    "vocab_size": 256,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}

CALIBRATION_TEXT = "\n".join(
    f"def function_{i}(value):\n    return value * {i} + {i * i} if value > {i % 7} else value - {i}\n"
    for i in range(60)
)


def tiny_parent(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return randomize_weights(LlamaForCausalLM(LlamaConfig(**{**PARENT, **overrides})), seed)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2's byte-to-character alphabet, no merges): 256 tokens, no download."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={char: idx for idx, char in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def save_parent(directory: Path, seed: int = 0, **overrides) -> Path:
    """A tiny parent with its tokenizer, as `save_pretrained` writes them."""
    tiny_parent(seed, **overrides).save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


def calibration_ids(num_sequences: int = 8, sequence_length: int = 32, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, PARENT["vocab_size"], (num_sequences, sequence_length), generator=generator)


def capture_inputs(model: torch.nn.Module, module: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """What `module` receives as its first argument when `model` reads `input_ids`, as `[tokens, features]`."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])
