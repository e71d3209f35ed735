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
"""Tiny heterogeneous Llama-family models and their independent reference description.

Nothing here imports `transformers.heterogeneity`: the suite runs on the installed `.pth` hook, which activates the
package when Transformers is imported below, exactly as in a user's interpreter (explicit activation has its own tests
in `test_activation.py`). Tests that deactivate the package re-activate it themselves.

A test writes its `per_layer_config` as plain numbers once; `build_config` hands it to the config class under test
and `layer_specs` turns the same numbers (never the model) into the reference's per-layer description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from .reference import LayerSpec


# The checkpoint families' tests in upstream's tester style subclass upstream's `tests/causal_lm_tester.py`, which is
# not part of this repository: they run inside upstream's test suite (`make upstream-model-tests`,
# `utils/run_upstream_model_tests.py`), and the upstream patch series puts them at `tests/models/<name>/`.
collect_ignore = ["upstream_models"]

# A three-layer Llama-shaped config for tests of the mechanism rather than of an architecture.
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
}

HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 96
NUM_ATTENTION_HEADS = 4
NUM_KEY_VALUE_HEADS = 2
HEAD_DIM = 16
VOCAB_SIZE = 100
ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-6

PerLayer = Mapping[int, Mapping[str, Any]]


@dataclass(frozen=True)
class Arch:
    """One Llama-family architecture and what its layers compute beyond plain Llama."""

    name: str
    config_cls: type[PreTrainedConfig]
    model_cls: type[PreTrainedModel]
    prefix: str  # class-name prefix: LlamaAttention, MistralMLP, ...
    qkv_bias: bool = False
    qk_norm: bool = False
    # Qwen2 stores no `head_dim`: a layer's head_dim is hidden_size // its own num_attention_heads.
    implicit_head_dim: bool = False
    config_kwargs: Mapping[str, Any] = field(default_factory=dict)


ARCHS = {
    "llama": Arch("llama", LlamaConfig, LlamaForCausalLM, "Llama"),
    # Per-layer windows are a later issue: all layers attend to the full context.
    "mistral": Arch("mistral", MistralConfig, MistralForCausalLM, "Mistral", config_kwargs={"sliding_window": None}),
    "qwen2": Arch("qwen2", Qwen2Config, Qwen2ForCausalLM, "Qwen2", qkv_bias=True, implicit_head_dim=True),
    "qwen3": Arch("qwen3", Qwen3Config, Qwen3ForCausalLM, "Qwen3", qk_norm=True),
}


@pytest.fixture(scope="module")
def single_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a shared 2-core machine the thread pool makes them
    10-50x slower as soon as another process runs. Restored afterwards: other modules compare bits with subprocesses
    that use the default thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=sorted(ARCHS))
def arch(request) -> Arch:
    return ARCHS[request.param]


def build_config(
    arch: Arch,
    per_layer: PerLayer | None,
    num_layers: int,
    attn_implementation: str = "eager",
    **kwargs: Any,
) -> PreTrainedConfig:
    """A tiny fp32 config of `arch` with the module's global numbers and `per_layer` as `per_layer_config`."""
    values = global_values(arch, num_layers, attn_implementation, **kwargs)
    if per_layer:
        values["per_layer_config"] = {idx: dict(overrides) for idx, overrides in per_layer.items()}
    return arch.config_cls(**values)


def global_values(arch: Arch, num_layers: int, attn_implementation: str = "eager", **kwargs: Any) -> dict[str, Any]:
    """The init arguments of `build_config` but `per_layer_config`: the module's global numbers, then `kwargs`."""
    values = {
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": num_layers,
        "num_attention_heads": NUM_ATTENTION_HEADS,
        "num_key_value_heads": NUM_KEY_VALUE_HEADS,
        "vocab_size": VOCAB_SIZE,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        # No special tokens: greedy generation must run its full length rather than stop at a random EOS.
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "tie_word_embeddings": False,
        "attn_implementation": attn_implementation,
        **arch.config_kwargs,
    }
    if not arch.implicit_head_dim:
        values["head_dim"] = HEAD_DIM
    values.update(kwargs)
    return values


def layer_specs(arch: Arch, per_layer: PerLayer | None, num_layers: int, **global_values: Any) -> list[LayerSpec]:
    """The reference description of every layer, from the numbers of the test (global values, then overrides)."""
    specs = []
    for layer_idx in range(num_layers):
        overrides = dict((per_layer or {}).get(layer_idx, {}))
        values = {
            "num_attention_heads": NUM_ATTENTION_HEADS,
            "num_key_value_heads": NUM_KEY_VALUE_HEADS,
            "intermediate_size": INTERMEDIATE_SIZE,
            "rms_norm_eps": RMS_NORM_EPS,
            "rope_parameters": {"rope_theta": ROPE_THETA},
            **global_values,
            **overrides,
        }
        heads = values["num_attention_heads"]
        if "head_dim" in values:
            head_dim = values["head_dim"]
        else:
            head_dim = HIDDEN_SIZE // heads if arch.implicit_head_dim else HEAD_DIM
        skips = set(overrides.get("skip", ()))
        specs.append(
            LayerSpec(
                attention=not skips & {"attention", "attention_replaced_by_linear"},
                mlp=not skips & {"mlp", "mlp_replaced_by_linear"},
                linear_attention="attention_replaced_by_linear" in skips,
                linear_mlp="mlp_replaced_by_linear" in skips,
                num_heads=heads,
                num_kv_heads=values["num_key_value_heads"],
                head_dim=head_dim,
                intermediate_size=values["intermediate_size"],
                rope_theta=values["rope_parameters"]["rope_theta"],
                rms_eps=values["rms_norm_eps"],
                qkv_bias=arch.qkv_bias,
                qk_norm=arch.qk_norm,
                window=values.get("sliding_window"),
            )
        )
    return specs


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Gives every parameter a distinct random value of unit-scale effect.

    Stock init leaves norms at one and biases at zero, which would hide a swapped or missing norm or bias, and its
    small weights give near-tied logits that make greedy comparisons fragile.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
        if name.endswith("norm.weight"):
            value = 1.0 + 0.2 * noise
        elif name.endswith("bias"):
            value = 0.2 * noise
        elif "embed_tokens" in name:
            value = noise
        elif parameter.ndim < 2:  # other vectors: GPT-OSS attention sinks
            value = 0.2 * noise
        else:  # Linear weight (out, in), or experts' (experts, in, out): unit variance outputs for unit variance inputs
            value = noise / math.sqrt(parameter.shape[1])
        parameter.copy_(value.to(parameter.dtype))
    return model.eval()


def build_model(
    arch: Arch,
    per_layer: PerLayer | None,
    num_layers: int,
    attn_implementation: str = "eager",
    seed: int = 0,
    **kwargs: Any,
) -> PreTrainedModel:
    """A randomly initialised fp32 model of `arch` built through the stock class constructor."""
    torch.manual_seed(seed)
    model = arch.model_cls(build_config(arch, per_layer, num_layers, attn_implementation, **kwargs))
    return randomize_weights(model, seed)


def make_input_ids(batch_size: int = 2, seq_len: int = 7, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB_SIZE, (batch_size, seq_len), generator=generator)


@pytest.fixture
def sdpa_mask_sizes(monkeypatch) -> list[int | None]:
    """Records every SDPA mask that upstream's mask functions build, by its window or chunk size (`None`: full)."""
    from transformers import masking_utils

    built = []
    mapping = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    sdpa_mask = mapping["sdpa"]

    def counting_sdpa_mask(*args, **kwargs):
        built.append(kwargs.get("local_size"))
        return sdpa_mask(*args, **kwargs)

    monkeypatch.setitem(mapping, "sdpa", counting_sdpa_mask)
    return built


def assert_cached_steps_match(
    model: PreTrainedModel, input_ids: torch.Tensor, prompt_len: int, cache: Any, expected: torch.Tensor
) -> None:
    """Feeds the first `prompt_len` tokens, then one token at a time, through `cache`: every position's logits equal
    `expected` (a full recompute), and the cache has seen every token."""
    with torch.no_grad():
        prompt = model(input_ids[:, :prompt_len], past_key_values=cache, use_cache=True)
        torch.testing.assert_close(prompt.logits, expected[:, :prompt_len], atol=1e-5, rtol=1e-5)
        for position in range(prompt_len, input_ids.shape[1]):
            step = model(input_ids[:, position : position + 1], past_key_values=cache, use_cache=True)
            torch.testing.assert_close(step.logits[:, 0], expected[:, position], atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == input_ids.shape[1]
