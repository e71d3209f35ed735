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
"""One tiny heterogeneous config per row of the architecture registry, and every head class upstream maps it to.

`TINY_MODELS` holds, for each `model_type` of `SUPPORTED_ARCHITECTURES` (the built-in architectures and the
checkpoint families registered on top of them), a config with per-layer FFN widths, KV heads, skipped sub-blocks and
per-layer windows where the architecture has them, plus what the test expects of every layer written out as numbers.
`head_classes` finds the model classes from Transformers' own Auto mappings, so that a head class upstream adds, or a
registry row added here, is covered without a hand-written list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from transformers import (
    AutoConfig,
    GptOssConfig,
    Llama4TextConfig,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto import modeling_auto

from . import checkpoints, gpt_oss_checkpoints, nemotron_h_puzzle_checkpoint
from .checkpoints import Layer, attention, ffn
from .conftest import ARCHS, build_config
from .gpt_oss_checkpoints import GPT_OSS_GLOBALS
from .nemotron_h_models import make_config as make_nemotron_h_config
from .test_llama4 import GLOBAL as LLAMA4_GLOBAL


BATCH_SIZE, SEQ_LEN = 2, 8  # longer than every window and chunk below, so that each one bites
PAD_TOKEN_ID = 0  # sequence classification pools at the last non-pad token; inputs draw from 1 up
GLOBAL_WINDOW = 3


@dataclass(frozen=True)
class TinyModel:
    """A registry row's tiny heterogeneous model.

    Args:
        make_config: `attn_implementation` -> a new config.
        attention_heads: per layer, the head count of the attention weights it outputs, `None` where it has no
            attention (skipped, linear, or a Mamba / MLP / MoE block); written out from the numbers of the config.
    """

    make_config: Callable[[str], PreTrainedConfig]
    attention_heads: tuple[int | None, ...]


# Llama family: layer 0 without attention, 1 and 2 with other KV heads (and windows), 3 without MLP and half the heads.
LLAMA_FAMILY_LAYERS = {
    0: {"skip": ["attention"], "intermediate_size": 48},
    1: {"num_key_value_heads": 1},
    2: {"num_key_value_heads": 4, "intermediate_size": 64},
    3: {"skip": ["mlp"], "num_attention_heads": 2},
}
# Windows [3 (global), None, 5, 3] on top: Mistral sets its window directly, Qwen2/Qwen3 make every layer a sliding
# layer and override the window (as in `test_masking_utils.py`).
WINDOWS = {1: {"sliding_window": None}, 2: {"sliding_window": 5}}
WINDOW_GLOBALS = {
    "llama": {},
    "mistral": {"sliding_window": GLOBAL_WINDOW},
    "qwen2": {"use_sliding_window": True, "sliding_window": GLOBAL_WINDOW, "max_window_layers": 0},
    "qwen3": {"use_sliding_window": True, "sliding_window": GLOBAL_WINDOW, "max_window_layers": 0},
}


def _llama_family(name: str) -> TinyModel:
    per_layer = {idx: dict(values) for idx, values in LLAMA_FAMILY_LAYERS.items()}
    if WINDOW_GLOBALS[name]:
        for idx, values in WINDOWS.items():
            per_layer[idx].update(values)

    def make(attn_implementation: str) -> PreTrainedConfig:
        return build_config(
            ARCHS[name], per_layer, 4, attn_implementation, pad_token_id=PAD_TOKEN_ID, **WINDOW_GLOBALS[name]
        )

    return TinyModel(make, (None, 4, 4, 2))


def _gpt_oss(attn_implementation: str) -> PreTrainedConfig:
    return GptOssConfig(
        **GPT_OSS_GLOBALS,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        per_layer_config={
            0: {"skip": ["attention"]},
            1: {"skip": ["mlp"]},
            2: {"sliding_window": 6, "num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 48},
            3: {"num_key_value_heads": 1},
        },
        pad_token_id=PAD_TOKEN_ID,
        attn_implementation=attn_implementation,
    )


def _llama4_text(attn_implementation: str) -> PreTrainedConfig:
    # Layers 1 and 3 are MoE (`moe_layers`), 0-2 chunked (chunks [-, None, 6]), 3 a NoPE layer with full attention.
    return Llama4TextConfig(
        **{**LLAMA4_GLOBAL, "pad_token_id": PAD_TOKEN_ID},
        per_layer_config={
            0: {"skip": ["attention"], "intermediate_size_mlp": 48},
            1: {"num_local_experts": 2, "intermediate_size": 16, "attention_chunk_size": None},
            2: {"skip": ["mlp"], "num_key_value_heads": 1, "attention_chunk_size": 6},
            3: {"num_attention_heads": 2},
        },
        attn_implementation=attn_implementation,
    )


def _nemotron_h(attn_implementation: str) -> PreTrainedConfig:
    blocks = ["linear_attention", "full_attention", "moe", "full_attention", "mlp"]
    per_layer = {
        1: {"num_key_value_heads": 1},
        2: {"moe_intermediate_size": 16, "num_experts_per_tok": 3},
        3: {"skip": ["mixer"]},
        4: {"intermediate_size": 40},
    }
    return make_nemotron_h_config(blocks, per_layer, attn_implementation, pad_token_id=PAD_TOKEN_ID)


# Nemotron-NAS blocks at hidden 128 (widths by hand: int(2 * mult * 128 / 3) rounded up to 256: 2.625 -> 224 -> 256,
# 5.25 -> 448 -> 512): KV heads 4 and 2, a no-op and a linear attention, a no-op and a linear FFN.
NEMOTRON_NAS_HIDDEN = 128
NEMOTRON_NAS_LAYERS = (
    Layer({"attention": attention(1), "ffn": ffn(2.625)}, kv_heads=4, ffn_width=256),
    Layer({"attention": attention(no_op=True), "ffn": ffn(5.25)}, kv_heads=0, ffn_width=512),
    Layer({"attention": attention(replace_with_linear=True), "ffn": ffn(no_op=True)}, kv_heads=-1, ffn_width=0),
    Layer({"attention": attention(2), "ffn": ffn(replace_with_linear=True)}, kv_heads=2, ffn_width=-1),
)


def _checkpoint_family(config_json: Callable[[], dict[str, Any]], **changes: Any) -> Callable[[str], PreTrainedConfig]:
    """A family's config made from its `config.json` (the released format) through `AutoConfig`."""

    def make(attn_implementation: str) -> PreTrainedConfig:
        return AutoConfig.for_model(**{**config_json(), **changes}, attn_implementation=attn_implementation)

    return make


TINY_MODELS: dict[str, TinyModel] = {
    **{name: _llama_family(name) for name in WINDOW_GLOBALS},
    "gpt_oss": TinyModel(_gpt_oss, (None, 4, 4, 4)),
    "llama4_text": TinyModel(_llama4_text, (None, 4, 4, 2)),
    "nemotron_h": TinyModel(_nemotron_h, (None, 4, None, None, None)),
    "nemotron-nas": TinyModel(
        _checkpoint_family(
            lambda: checkpoints.nemotron_config(NEMOTRON_NAS_LAYERS),
            hidden_size=NEMOTRON_NAS_HIDDEN,
            torch_dtype="float32",
        ),
        (4, None, None, 4),
    ),
    "deci": TinyModel(_checkpoint_family(checkpoints.deci_config, torch_dtype="float32"), (4, 4, 4, 4)),
    "gpt_oss_puzzle": TinyModel(_checkpoint_family(gpt_oss_checkpoints.puzzle_config), (4, 4, 4, 4)),
    "nemotron_h_puzzle": TinyModel(
        _checkpoint_family(nemotron_h_puzzle_checkpoint.puzzle_config), (None, None, 4, None, None, None, None)
    ),
}


def head_classes(config_cls: type[PreTrainedConfig]) -> dict[type[PreTrainedModel], type]:
    """Every model class that Transformers' Auto classes build for `config_cls`, with the first Auto class (by name)
    that builds it.

    Reads each Auto class's mapping (`_model_mapping`: `MODEL_MAPPING`, `MODEL_FOR_CAUSAL_LM_MAPPING`, ...), which
    also holds the classes registered at run time (the checkpoint families). A mapped class that takes another config
    is left out: `MODEL_FOR_DECISION_MAPPING` maps `qwen2` to `JevForDecision`, which wraps a `JevConfig` (5.23).
    """
    heads: dict[type[PreTrainedModel], type] = {}
    for name in sorted(dir(modeling_auto)):
        auto_cls = getattr(modeling_auto, name)
        mapping = getattr(auto_cls, "_model_mapping", None)
        if not name.startswith("AutoModel") or mapping is None or config_cls not in mapping:
            continue
        mapped = mapping[config_cls]
        for model_cls in mapped if isinstance(mapped, tuple) else (mapped,):
            if issubclass(config_cls, model_cls.config_class):
                heads.setdefault(model_cls, auto_cls)
    return heads


def training_targets(auto_name: str, input_ids: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """The labels a head of `auto_name` trains on (`None`: a base model, trained on its hidden states).

    Raises:
        KeyError: a head kind this suite has no targets for, so that a new one is noticed.
    """
    batch_size, seq_len = input_ids.shape
    generator = torch.Generator().manual_seed(2)
    targets = {
        "AutoModel": lambda: None,
        "AutoModelForCausalLM": lambda: {"labels": input_ids},
        "AutoModelForSequenceClassification": lambda: {"labels": torch.tensor([0, 1])},
        "AutoModelForTokenClassification": lambda: {
            "labels": torch.randint(0, 2, (batch_size, seq_len), generator=generator)
        },
        "AutoModelForQuestionAnswering": lambda: {
            "start_positions": torch.tensor([1, 2]),
            "end_positions": torch.tensor([3, seq_len - 1]),
        },
    }
    if auto_name not in targets:
        raise KeyError(f"No training targets for {auto_name}: add them to `training_targets`.")
    return targets[auto_name]()
