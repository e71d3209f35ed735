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
"""Property tests over random `per_layer_config`s (DESIGN.md "How we test").

Each drawn config either builds a model whose logits equal the independent reference, or is refused at construction
with a `HeterogeneousConfigError` naming the offending layer and attribute; never any other exception. Which of the
two must happen is predicted from the drawn numbers, so a wrong acceptance fails as surely as a wrong refusal.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from transformers.heterogeneity import HeterogeneousConfigError

from .conftest import (
    ARCHS,
    HIDDEN_SIZE,
    NUM_ATTENTION_HEADS,
    NUM_KEY_VALUE_HEADS,
    VOCAB_SIZE,
    Arch,
    build_model,
    layer_specs,
    make_input_ids,
)
from .reference import reference_forward


pytestmark = pytest.mark.usefixtures("single_thread")

NUM_LAYERS = 3
SKIP_NAMES = ("attention", "mlp")
INVALID_SKIP_NAMES = ("ffn", "Attention", "self_attn", "")
# Attributes the decoder layer does not read, or that shape the whole model: refused per layer by this package.
UNREAD_ATTRIBUTES = {"use_cache": False, "initializer_range": 0.5, "tie_word_embeddings": True}
# Model-level attributes that upstream config validation reads on the global config (`validate_token_ids`, ...).
VALIDATED_MODEL_LEVEL_ATTRIBUTES = {"vocab_size": VOCAB_SIZE // 2, "hidden_size": HIDDEN_SIZE // 2}

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is never a flake
    database=None,  # no .hypothesis directory in the repository
    # No shrinking: it costs tens of seconds per failure, and every failure found so far has a deterministic test.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def rarely(draw) -> bool:
    """True in about one draw in ten: invalid values must not crowd out the configs that build."""
    return draw(st.sampled_from([False] * 9 + [True]))


@st.composite
def per_layer_configs(draw, arch: Arch, unknown_attributes: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Random overrides for some layers: widths, heads, KV heads, head_dim and skips, rarely an impossible value."""
    per_layer = {}
    for layer_idx in range(NUM_LAYERS):
        overrides: dict[str, Any] = {}
        if draw(st.booleans()):
            overrides["intermediate_size"] = draw(st.sampled_from([16, 32, 64, 128]))
        heads = NUM_ATTENTION_HEADS
        if draw(st.booleans()):
            heads = overrides["num_attention_heads"] = draw(st.sampled_from([2, 4, 8]))
        if rarely(draw):
            overrides["num_key_value_heads"] = draw(st.sampled_from([3, 2 * heads]))  # does not divide the heads
        elif draw(st.booleans()):
            overrides["num_key_value_heads"] = draw(st.sampled_from([d for d in (1, 2, 4, 8) if heads % d == 0]))
        if draw(st.booleans()):
            overrides["head_dim"] = draw(st.sampled_from([8, 16]))
        skip = sorted(draw(st.sets(st.sampled_from(SKIP_NAMES))))
        if rarely(draw):
            skip.append(draw(st.sampled_from(INVALID_SKIP_NAMES)))
        if skip:
            overrides["skip"] = skip
        if unknown_attributes and rarely(draw):
            name = draw(st.sampled_from(sorted(unknown_attributes)))
            overrides[name] = unknown_attributes[name]
        if overrides:
            per_layer[layer_idx] = overrides
    return per_layer


def expected_problems(
    per_layer: dict[int, dict[str, Any]], unknown_attributes: dict[str, Any]
) -> list[tuple[int, str]]:
    """(layer, attribute) pairs that make the config impossible, from the numbers alone."""
    problems = []
    for layer_idx, overrides in sorted(per_layer.items()):
        if set(overrides.get("skip", ())) - set(SKIP_NAMES):
            problems.append((layer_idx, "skip"))
        heads = overrides.get("num_attention_heads", NUM_ATTENTION_HEADS)
        if "num_key_value_heads" in overrides and heads % overrides["num_key_value_heads"]:
            problems.append((layer_idx, "num_key_value_heads"))
        if "num_attention_heads" in overrides and heads % overrides.get("num_key_value_heads", NUM_KEY_VALUE_HEADS):
            problems.append((layer_idx, "num_attention_heads"))
        problems.extend((layer_idx, name) for name in overrides if name in unknown_attributes)
    return problems


def check_example(arch: Arch, per_layer: dict[int, dict[str, Any]], unknown_attributes: dict[str, Any]) -> None:
    problems = expected_problems(per_layer, unknown_attributes)
    try:
        model = build_model(arch, per_layer, NUM_LAYERS)
    except HeterogeneousConfigError as error:
        message = str(error)
        event("refused")
        assert problems, f"valid per_layer_config {per_layer} refused: {message}"
        assert any(f"Layer {idx}" in message and name in message for idx, name in problems), (problems, message)
        return
    event("built")
    assert not problems, f"{per_layer} built a model although {problems} cannot be honoured"
    input_ids = make_input_ids(batch_size=1, seq_len=6)
    with torch.no_grad():
        # Without a cache: caches are covered in test_modeling_architectures (including all attention skipped).
        logits = model(input_ids, use_cache=False).logits
    expected = reference_forward(model.state_dict(), layer_specs(arch, per_layer, NUM_LAYERS), input_ids)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch_name", ["llama", "qwen3"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_per_layer_config_builds_reference_model_or_refuses_clearly(arch_name, data):
    arch = ARCHS[arch_name]
    check_example(arch, data.draw(per_layer_configs(arch, UNREAD_ATTRIBUTES)), UNREAD_ATTRIBUTES)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_per_layer_config_with_model_level_attribute_refused_clearly(data):
    """`vocab_size` or `hidden_size` per layer must be refused like any other impossible override (contract 3)."""
    arch = ARCHS["llama"]
    check_example(
        arch, data.draw(per_layer_configs(arch, VALIDATED_MODEL_LEVEL_ATTRIBUTES)), VALIDATED_MODEL_LEVEL_ATTRIBUTES
    )
