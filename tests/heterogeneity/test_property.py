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
"""Property tests over random `per_layer_config`s of every supported architecture (DESIGN.md "How we test").

Each drawn config (random per-layer widths, heads, KV heads, head sizes, windows, expert counts, skips and linear
sub-blocks, and now and then one impossible or malformed value) either builds a model that is checked against
references that do not use this package, or is refused with a `HeterogeneousConfigError` naming the layer and the
attribute (or the bad key); never any other exception. Which of the two must happen is predicted from the drawn
numbers, so a wrong acceptance fails as surely as a wrong refusal. A built model is checked for:

- structure: each layer holds exactly the tensors, of the same shapes, of a stock layer built from a homogeneous
  one-layer config with that layer's values, minus its skipped sub-blocks (plus the linear maps that replace some);
- forward: its logits equal those of the stock layers run one after the other (each a stock one-layer model fed with
  `inputs_embeds`, a skipped sub-block's output projection zeroed), and for the Llama family also the independent
  forward of `reference.py`;
- caches: after the prompt, each layer's cache holds exactly what the stock layer's cache holds (same layer class,
  same tensors), and a layer without attention or state holds nothing;
- save and load: `save_pretrained` then `from_pretrained` gives the same tensors and the same logits bit for bit.

Profiles: `make test` runs `heterogeneity-quick` (a few configs per architecture); `make test-property` (called by
`.ci/run`) runs `heterogeneity-ci`, at least 1,000 configs in all, and reports their count.
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from torch import nn

from transformers import (
    AutoModelForCausalLM,
    GptOssConfig,
    GptOssForCausalLM,
    Llama4ForCausalLM,
    Llama4TextConfig,
    NemotronHConfig,
    NemotronHForCausalLM,
)
from transformers.heterogeneity import SUPPORTED_ARCHITECTURES, HeterogeneousConfigError
from transformers.heterogeneity.cache_utils import SKIPS_WITHOUT_CACHE_STATE
from transformers.utils import logging

from .conftest import ARCHS, HIDDEN_SIZE, NUM_ATTENTION_HEADS, NUM_KEY_VALUE_HEADS, global_values, layer_specs
from .conftest import randomize_weights as randomize_llama_weights
from .gpt_oss_checkpoints import GPT_OSS_GLOBALS
from .nemotron_h_models import BASE as NEMOTRON_H_BASE
from .nemotron_h_models import randomize_weights as randomize_nemotron_weights
from .reference import linear, reference_forward, rms_norm
from .test_docs import refusal_kinds
from .test_llama4 import GLOBAL as LLAMA4_GLOBAL


pytestmark = pytest.mark.usefixtures("single_thread", "no_progress_bars")


@pytest.fixture(scope="module")
def no_progress_bars():
    """A thousand saves and loads would print two thousand progress bars."""
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    yield
    if enabled:
        logging.enable_progress_bar()


PROFILE_VARIABLE = "HETEROGENEITY_PROPERTY_PROFILE"
_COMMON = {
    "deadline": None,
    "derandomize": True,  # the same examples on every run: a failure here is never a flake
    "database": None,  # no .hypothesis directory in the repository
    # No shrinking: it costs minutes per failure on these models; the failing example is printed as drawn.
    "phases": [Phase.explicit, Phase.generate],
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("heterogeneity-quick", max_examples=3, **_COMMON)
settings.register_profile("heterogeneity-ci", max_examples=150, **_COMMON)  # x 7 architectures: 1,050 configs
PROFILE = os.environ.get(PROFILE_VARIABLE, "quick")
PROFILE_SETTINGS = settings(settings.get_profile(f"heterogeneity-{PROFILE}"))
CI_MINIMUM = 1000

BATCH_SIZE, SEQ_LEN = 2, 7  # longer than every drawn window and chunk, so that each one bites
ATOL = RTOL = 1e-5
RUNS: collections.Counter[tuple[str, str]] = collections.Counter()  # (architecture, "built" / "refused")

# Values a layer never reads, or that shape the whole model: refused per layer.
UNREAD = {"use_cache": False, "initializer_range": 0.5}
MODEL_LEVEL = {"vocab_size": 50, "hidden_size": 32}
INVALID_SKIP_NAMES = ("ffn", "Attention", "self_attn", "")
MISSPELLED = {"intermediate_sise": 64, "num_kv_heads": 2, "head_dims": 8}
BAD_SIZES = ("64", 32.5, True, None, 16.0)
BAD_KEYS = (True, 1.5, " 1", None)
# The member names of a sub-block's output projection: a stock layer with it zeroed adds nothing to the residual.
OUTPUT_PROJECTIONS = ("o_proj", "down_proj", "out_proj")


@dataclass(frozen=True)
class Family:
    """How to draw, build and check one architecture of the registry.

    Args:
        draw_globals: the global config values of one example (the layer pattern may be drawn).
        draw_layer: valid overrides of one layer (no skips), given the globals.
        skip_slots: per sub-block slot, the skip names that may empty or replace it (one per slot at most); the
            attention's (or the mixer's) first.
        removed: skip name -> the layer members it removes (their tensors are gone from the layer).
        one_layer: (globals, layer index, overrides without skips) -> the values of a homogeneous config whose first
            layer is the stock equivalent of that layer (any later layer is made to add nothing).
        size_attribute: an integer size every layer of the globals reads, for the wrongly typed values.
        windows_refused: (globals, layer index) -> a window attribute and value this layer must refuse, if any (a
            value other than the global one: upstream drops an override equal to it as no change).
    """

    name: str
    config_cls: type
    model_cls: type
    draw_globals: Callable[[Any], dict[str, Any]]
    draw_layer: Callable[[Any, dict[str, Any], int], dict[str, Any]]
    skip_slots: tuple[tuple[str, ...], ...]
    removed: dict[str, tuple[str, ...]]
    one_layer: Callable[[dict[str, Any], int, dict[str, Any]], dict[str, Any]]
    size_attribute: str
    windows_refused: Callable[[dict[str, Any], int], tuple[str, Any] | None] = lambda values, idx: None
    randomize: Callable[[nn.Module], nn.Module] = randomize_nemotron_weights
    final_norm: str = "norm"
    linear: dict[str, tuple[str, str]] = field(default_factory=dict)  # skip -> (norm, member holding the map)
    math_reference: bool = False


def heads_and_kv_heads(draw, heads_choices=(2, 4, 8)) -> dict[str, int]:
    values = {}
    heads = NUM_ATTENTION_HEADS
    if draw(st.booleans()):
        heads = values["num_attention_heads"] = draw(st.sampled_from(heads_choices))
    if draw(st.booleans()) or heads % NUM_KEY_VALUE_HEADS:
        values["num_key_value_heads"] = draw(st.sampled_from([kv for kv in (1, 2, 4, 8) if heads % kv == 0]))
    return values


def experts(draw, values: dict[str, Any], counts: tuple[int, ...]) -> dict[str, int]:
    """A MoE layer's expert width, expert count and top-k (at most the count), each drawn or left global."""
    overrides = {}
    if draw(st.booleans()):
        overrides["intermediate_size"] = draw(st.sampled_from([16, 48]))
    count = values["num_local_experts"]
    if draw(st.booleans()):
        count = overrides["num_local_experts"] = draw(st.sampled_from(counts))
    if draw(st.booleans()) or values["num_experts_per_tok"] > count:
        overrides["num_experts_per_tok"] = draw(st.integers(1, count))
    return overrides


# --- the Llama family: Llama, Mistral, Qwen2, Qwen3 --------------------------------------------------------------

LLAMA_LAYERS = 3
LLAMA_GLOBALS = {
    "llama": {},
    "mistral": {"sliding_window": 4},
    # Every layer a sliding layer, so that each may have its own window (or none).
    "qwen2": {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 0},
    "qwen3": {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 0},
}


def llama_family(name: str) -> Family:
    arch = ARCHS[name]

    def draw_globals(draw) -> dict[str, Any]:
        return global_values(arch, LLAMA_LAYERS, **LLAMA_GLOBALS[name])

    def draw_layer(draw, values, layer_idx) -> dict[str, Any]:
        overrides = heads_and_kv_heads(draw)
        if draw(st.booleans()):
            overrides["intermediate_size"] = draw(st.sampled_from([16, 32, 64, 128]))
        if not arch.implicit_head_dim and draw(st.booleans()):  # Qwen2 has no head_dim: hidden // heads
            overrides["head_dim"] = draw(st.sampled_from([8, 16, 32]))
        if LLAMA_GLOBALS[name] and draw(st.booleans()):
            overrides["sliding_window"] = draw(st.sampled_from([None, 2, 5]))
        return overrides

    def one_layer(values, layer_idx, overrides) -> dict[str, Any]:
        layer = {**values, **overrides, "num_hidden_layers": 1}
        if name in ("qwen2", "qwen3") and layer["sliding_window"] is None:
            # A full-attention layer; the stock model still builds its sliding mask from the global window.
            layer.update(layer_types=["full_attention"], sliding_window=values["sliding_window"])
        return layer

    return Family(
        name=name,
        config_cls=arch.config_cls,
        model_cls=arch.model_cls,
        draw_globals=draw_globals,
        draw_layer=draw_layer,
        skip_slots=(("attention", "attention_replaced_by_linear"), ("mlp", "mlp_replaced_by_linear")),
        removed={
            "attention": ("input_layernorm.", "self_attn."),
            "mlp": ("post_attention_layernorm.", "mlp."),
            "attention_replaced_by_linear": ("self_attn.",),
            "mlp_replaced_by_linear": ("mlp.",),
        },
        linear={
            "attention_replaced_by_linear": ("input_layernorm", "self_attn.linear_attn"),
            "mlp_replaced_by_linear": ("post_attention_layernorm", "mlp.linear_mlp"),
        },
        one_layer=one_layer,
        size_attribute="intermediate_size",
        windows_refused=lambda values, idx: ("sliding_window", 7) if name == "llama" else None,
        randomize=randomize_llama_weights,
        math_reference=True,
    )


# --- Llama 4: dense or MoE per layer from `moe_layers`, chunked RoPE layers and full NoPE layers -------------------


def _llama4_uses_rope(values: dict[str, Any], layer_idx: int) -> bool:
    return (layer_idx + 1) % values["no_rope_layer_interval"] != 0


def _llama4_layer(draw, values, layer_idx) -> dict[str, Any]:
    overrides = heads_and_kv_heads(draw, heads_choices=(2, 4))
    if draw(st.booleans()):
        overrides["head_dim"] = draw(st.sampled_from([8, 16]))
    if _llama4_uses_rope(values, layer_idx) and draw(st.booleans()):
        overrides["attention_chunk_size"] = draw(st.sampled_from([None, 2, 6]))
    if layer_idx in values["moe_layers"]:
        overrides.update(experts(draw, values, (1, 2, 3)))
    elif draw(st.booleans()):
        overrides["intermediate_size_mlp"] = draw(st.sampled_from([32, 48, 128]))
    return overrides


def _llama4_one_layer(values, layer_idx, overrides) -> dict[str, Any]:
    layer = {**values, **overrides, "num_hidden_layers": 1}
    uses_rope = _llama4_uses_rope(values, layer_idx)
    layer["moe_layers"] = [0] if layer_idx in values["moe_layers"] else []
    layer["no_rope_layers"] = [int(uses_rope)]
    chunked = uses_rope and layer["attention_chunk_size"] is not None
    layer["layer_types"] = ["chunked_attention" if chunked else "full_attention"]
    if not chunked:  # the stock model still builds its chunked mask from the global chunk size
        layer["attention_chunk_size"] = values["attention_chunk_size"]
    return layer


LLAMA4 = Family(
    name="llama4_text",
    config_cls=Llama4TextConfig,
    model_cls=Llama4ForCausalLM,
    draw_globals=lambda draw: {**LLAMA4_GLOBAL, "attn_implementation": "eager"},
    draw_layer=_llama4_layer,
    skip_slots=(("attention",), ("mlp",)),
    removed={"attention": ("input_layernorm.", "self_attn."), "mlp": ("post_attention_layernorm.", "feed_forward.")},
    one_layer=_llama4_one_layer,
    size_attribute="num_attention_heads",
    # NoPE layers attend to everything.
    windows_refused=lambda values, idx: None if _llama4_uses_rope(values, idx) else ("attention_chunk_size", 7),
)


# --- GPT-OSS: sliding or full layers from `layer_types`, per-layer experts ------------------------------------------


def _gpt_oss_globals(draw) -> dict[str, Any]:
    layer_types = draw(st.lists(st.sampled_from(["sliding_attention", "full_attention"]), min_size=4, max_size=4))
    return {**GPT_OSS_GLOBALS, "layer_types": layer_types, "attn_implementation": "eager"}


def _gpt_oss_layer(draw, values, layer_idx) -> dict[str, Any]:
    overrides = {}
    if draw(st.booleans()):
        overrides["num_key_value_heads"] = draw(st.sampled_from([1, 2, 4]))
    overrides.update(experts(draw, values, (2, 3, 6)))
    if values["layer_types"][layer_idx] == "sliding_attention" and draw(st.booleans()):
        overrides["sliding_window"] = draw(st.sampled_from([None, 3, 6]))
    return overrides


def _gpt_oss_one_layer(values, layer_idx, overrides) -> dict[str, Any]:
    layer = {**values, **overrides, "num_hidden_layers": 1}
    sliding = values["layer_types"][layer_idx] == "sliding_attention" and layer["sliding_window"] is not None
    layer["layer_types"] = ["sliding_attention" if sliding else "full_attention"]
    if not sliding:  # the stock model still builds its sliding mask from the global window
        layer["sliding_window"] = values["sliding_window"]
    return layer


GPT_OSS = Family(
    name="gpt_oss",
    config_cls=GptOssConfig,
    model_cls=GptOssForCausalLM,
    draw_globals=_gpt_oss_globals,
    draw_layer=_gpt_oss_layer,
    skip_slots=(("attention",), ("mlp",)),
    removed={"attention": ("input_layernorm.", "self_attn."), "mlp": ("post_attention_layernorm.", "mlp.")},
    one_layer=_gpt_oss_one_layer,
    size_attribute="intermediate_size",
    windows_refused=lambda values, idx: (
        ("sliding_window", 7) if values["layer_types"][idx] == "full_attention" else None
    ),
)


# --- NemotronH: one mixer per block (Mamba2, attention, MLP or MoE) from `layers_block_type` ------------------------

NEMOTRON_H_BLOCKS = ("linear_attention", "full_attention", "moe", "mlp")


def _nemotron_h_globals(draw) -> dict[str, Any]:
    # Upstream's cache needs an attention layer to count tokens: a stack without one cannot decode, stock or not.
    blocks = draw(st.lists(st.sampled_from(NEMOTRON_H_BLOCKS), min_size=4, max_size=4))
    blocks[draw(st.integers(0, 3))] = "full_attention"
    return {**NEMOTRON_H_BASE, "layers_block_type": blocks, "attn_implementation": "eager"}


def _nemotron_h_layer(draw, values, layer_idx) -> dict[str, Any]:
    block = values["layers_block_type"][layer_idx]
    overrides = {}
    if block == "full_attention" and draw(st.booleans()):
        overrides["num_key_value_heads"] = draw(st.sampled_from([1, 2, 4]))
    if block == "moe":
        if draw(st.booleans()):
            overrides["moe_intermediate_size"] = draw(st.sampled_from([16, 48]))
        if draw(st.booleans()):
            overrides["num_experts_per_tok"] = draw(st.integers(1, values["n_routed_experts"]))
    if block == "mlp" and draw(st.booleans()):
        overrides["intermediate_size"] = draw(st.sampled_from([40, 128]))
    if block == "linear_attention" and draw(st.booleans()):
        overrides["ssm_state_size"] = draw(st.sampled_from([4, 16]))
    return overrides


NEMOTRON_H = Family(
    name="nemotron_h",
    config_cls=NemotronHConfig,
    model_cls=NemotronHForCausalLM,
    draw_globals=_nemotron_h_globals,
    draw_layer=_nemotron_h_layer,
    skip_slots=(("mixer",),),
    removed={"mixer": ("norm.", "mixer.")},
    # NemotronH counts its layers from `layers_block_type`. A zeroed attention block follows (`stock_layer`), for the
    # cache of a lone Mamba block.
    one_layer=lambda values, idx, overrides: {
        **values,
        **overrides,
        "layers_block_type": [values["layers_block_type"][idx], "full_attention"],
    },
    size_attribute="intermediate_size",
    windows_refused=lambda values, idx: ("sliding_window", 7),
    final_norm="norm_f",
)

FAMILIES = {
    **{name: llama_family(name) for name in LLAMA_GLOBALS},
    "llama4_text": LLAMA4,
    "gpt_oss": GPT_OSS,
    "nemotron_h": NEMOTRON_H,
}


def test_every_supported_architecture_is_drawn():
    """Each architecture of the registry (the checkpoint families registered on top of them reuse their modules)."""
    architectures = {spec.modeling_module for spec in SUPPORTED_ARCHITECTURES.values()}
    assert architectures == {family.model_cls.__module__ for family in FAMILIES.values()}


# --- drawing one example, and what it must give -------------------------------------------------------------------


@dataclass
class Example:
    values: dict[str, Any]  # global config values
    per_layer: dict[Any, Any]  # the `per_layer_config` passed, keys and all
    layers: dict[int, dict[str, Any]]  # each layer's overrides as meant (for a well-formed example)
    problems: list[tuple[int | None, str]]  # (layer, word) that a refusal must name; empty: it must build


def layer_count(values: dict[str, Any]) -> int:
    return values["num_hidden_layers"] if "num_hidden_layers" in values else len(values["layers_block_type"])


def rarely(draw) -> bool:
    """True in about one draw in eight: invalid values must not crowd out the configs that build."""
    return draw(st.sampled_from([False] * 7 + [True]))


@st.composite
def examples(draw, family: Family) -> Example:
    values = family.draw_globals(draw)
    num_layers = layer_count(values)
    layers = {}
    for layer_idx in range(num_layers):
        overrides = family.draw_layer(draw, values, layer_idx)
        skips = [draw(st.sampled_from((None, *slot))) for slot in family.skip_slots]
        if skips := [skip for skip in skips if skip is not None]:
            overrides["skip"] = skips
        if overrides:
            layers[layer_idx] = overrides
    per_layer = {idx: dict(overrides) for idx, overrides in layers.items()}
    problems = []
    if rarely(draw):
        problems = draw_a_problem(draw, family, values, per_layer)
    return Example(values, per_layer, layers, problems)


def draw_a_problem(draw, family: Family, values: dict[str, Any], per_layer: dict) -> list[tuple[int | None, str]]:
    """Makes `per_layer` impossible or malformed in one drawn way, and returns what the refusal must name."""
    layer_idx = draw(st.integers(0, layer_count(values) - 1))
    overrides = per_layer.setdefault(layer_idx, {})
    kinds = ["kv_heads", "skip", "unread", "model_level", "type", "misspelled", "key", "twice", "overrides"]
    # A window is an attribute of the attention: like its other attributes, accepted where the attention is skipped.
    attention_kept = not set(overrides.get("skip", ())) & set(family.skip_slots[0])
    kinds += ["window"] if family.windows_refused(values, layer_idx) and attention_kept else []
    kinds += ["conflict"] if any(len(slot) > 1 for slot in family.skip_slots) else []
    kinds += ["model_reads"] if model_read_epsilon(family) else []
    assert set(kinds) <= DOCUMENTED_AS.keys()  # a new kind says which documented refusal it is
    kind = draw(st.sampled_from(kinds))
    if kind == "model_reads":
        overrides[model_read_epsilon(family)] = 1e-3
        return [(layer_idx, model_read_epsilon(family))]
    if kind == "kv_heads":  # divides no head count drawn (and is read by no Mamba, MLP or MoE block)
        overrides["num_key_value_heads"] = 3
        return [(layer_idx, "num_key_value_heads")]
    if kind == "skip":
        overrides["skip"] = [*overrides.get("skip", []), draw(st.sampled_from(INVALID_SKIP_NAMES))]
        return [(layer_idx, "skip")]
    if kind in ("unread", "model_level", "misspelled"):
        table = {"unread": UNREAD, "model_level": MODEL_LEVEL, "misspelled": MISSPELLED}[kind]
        name = draw(st.sampled_from(sorted(table)))
        overrides[name] = table[name]
        return [(layer_idx, name)]
    if kind == "type":
        overrides[family.size_attribute] = draw(st.sampled_from(BAD_SIZES))
        return [(layer_idx, family.size_attribute)]
    if kind == "window":
        name, value = family.windows_refused(values, layer_idx)
        overrides[name] = value
        return [(layer_idx, name)]
    if kind == "conflict":
        slot = next(slot for slot in family.skip_slots if len(slot) > 1)
        overrides["skip"] = [name for name in overrides.get("skip", []) if name not in slot] + list(slot[:2])
        return [(layer_idx, "both replace")]
    if kind == "overrides":
        per_layer[layer_idx] = None
        return [(layer_idx, "overrides must be a dict")]
    if kind == "twice":
        per_layer[str(layer_idx)] = dict(overrides)
        return [(None, f"gives layer {layer_idx} twice")]
    moved = per_layer.pop(layer_idx)
    key = draw(st.sampled_from([key for key in BAD_KEYS if key not in per_layer]))  # True is 1 to a dict
    per_layer[key] = moved
    return [(None, f"key {key!r}")]


def model_read_epsilon(family: Family) -> str | None:
    """The norm epsilon the model's own final norm reads too, if any (refused per layer without the opt-in)."""
    return next(iter(SUPPORTED_ARCHITECTURES[family.name].model_reads & {"rms_norm_eps", "layer_norm_epsilon"}), None)


# Each kind of problem drawn, and the kind of refusal it is in the documented list (README, guide).
DOCUMENTED_AS = {
    "kv_heads": "Key/value heads",
    "skip": "Skips",
    "conflict": "Skips",
    "unread": "Attributes the layer does not read",
    "window": "Attributes the layer does not read",
    "model_level": "Model-level attributes",
    "model_reads": "Attributes the model's own modules read too",
    "type": "Values of the wrong type or size",
    "misspelled": "Unknown attributes",
    "key": "Keys that are not layer indices",
    "twice": "Keys that are not layer indices",
    "overrides": "Not a per-layer config",
}


def test_the_documented_refusals_are_those_drawn():
    """Every kind of refusal the docs list is drawn here (and so shown to be refused on every architecture), but the
    unsupported architectures, which are no per-layer config of a supported one."""
    assert set(DOCUMENTED_AS.values()) == set(refusal_kinds()) - {"Unsupported architectures"}


# --- the checks ---------------------------------------------------------------------------------------------------


def check_example(family: Family, example: Example) -> None:
    try:
        torch.manual_seed(0)
        model = family.model_cls(family.config_cls(**example.values, per_layer_config=example.per_layer))
    except HeterogeneousConfigError as error:
        message = str(error)
        RUNS[family.name, "refused"] += 1
        event("refused")
        assert example.problems, f"valid per_layer_config {example.per_layer} refused: {message}"
        assert any(
            word in message
            and (layer_idx is None or f"Layer {layer_idx}" in message or f"layer {layer_idx}" in message)
            for layer_idx, word in example.problems
        ), (example.problems, message)
        return
    RUNS[family.name, "built"] += 1
    event("built")
    assert not example.problems, f"{example.per_layer} built a model although {example.problems} is wrong"
    model = family.randomize(model).eval()
    input_ids = torch.randint(
        0, example.values["vocab_size"], (BATCH_SIZE, SEQ_LEN), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        output = model(input_ids, use_cache=True)
    stock_layers = [stock_layer(family, example, model, layer_idx) for layer_idx in range(layer_count(example.values))]
    expected_logits, stock_caches = run_stock_layers(family, example, model, stock_layers, input_ids)
    torch.testing.assert_close(output.logits, expected_logits, atol=ATOL, rtol=RTOL)
    if family.math_reference:
        specs = layer_specs(ARCHS[family.name], example.layers, layer_count(example.values), **example.values)
        expected = reference_forward(
            model.state_dict(), specs, input_ids, final_rms_eps=example.values["rms_norm_eps"]
        )
        torch.testing.assert_close(output.logits, expected, atol=ATOL, rtol=RTOL)
    check_caches(family, example, output.past_key_values, stock_caches)
    check_save_and_load(model, input_ids, output.logits)


def skips_of(example: Example, layer_idx: int) -> list[str]:
    return list(example.layers.get(layer_idx, {}).get("skip", []))


def stock_layer(family: Family, example: Example, model: nn.Module, layer_idx: int) -> nn.Module:
    """A stock one-layer model of layer `layer_idx`'s values holding the heterogeneous layer's tensors; skipped and
    replaced sub-blocks keep the stock tensors, output projections zeroed (they add nothing). Checks the structure:
    the heterogeneous layer holds the stock layer's tensors of the same shapes, less the removed members, plus the
    linear maps of replaced sub-blocks."""
    overrides = {key: value for key, value in example.layers.get(layer_idx, {}).items() if key != "skip"}
    config = family.config_cls(**family.one_layer(example.values, layer_idx, overrides))
    assert not config.is_heterogeneous
    torch.manual_seed(0)
    stock = family.model_cls(config).eval()
    stock_block = stock.model.layers[0]
    skips = skips_of(example, layer_idx)
    removed = tuple(prefix for skip in skips for prefix in family.removed[skip])
    linear_maps = {
        f"{family.linear[skip][1]}.weight": (HIDDEN_SIZE, HIDDEN_SIZE) for skip in skips if skip in family.linear
    }
    layer_state = model.model.layers[layer_idx].state_dict()
    expected = {
        name: tuple(tensor.shape) for name, tensor in stock_block.state_dict().items() if not name.startswith(removed)
    }
    assert {name: tuple(tensor.shape) for name, tensor in layer_state.items()} == {**expected, **linear_maps}
    with torch.no_grad():
        stock_block.load_state_dict({name: layer_state[name] for name in expected}, strict=False)
        for name, parameter in stock_block.named_parameters():
            if name.startswith(removed) and any(projection in name for projection in OUTPUT_PROJECTIONS):
                parameter.zero_()
        for extra_layer in stock.model.layers[1:]:  # added for upstream's sake (see `one_layer`): adds nothing
            for name, parameter in extra_layer.named_parameters():
                if any(projection in name for projection in OUTPUT_PROJECTIONS):
                    parameter.zero_()
    setattr(stock.model, family.final_norm, nn.Identity())  # the model's final norm runs once, at the end
    return stock


@torch.no_grad()
def run_stock_layers(
    family: Family, example: Example, model: nn.Module, stock_layers: list[nn.Module], input_ids: torch.Tensor
) -> tuple[torch.Tensor, list[Any]]:
    """Logits of the stock layers run one after the other on the model's embeddings (then its final norm and head),
    and each stock layer's cache."""
    hidden = model.get_input_embeddings()(input_ids)
    caches = []
    for layer_idx, stock in enumerate(stock_layers):
        skips = skips_of(example, layer_idx)
        state = model.model.layers[layer_idx].state_dict()
        for skip in skips:  # a replaced attention runs before the stock layer, whose attention adds nothing
            if skip in family.linear and skip.startswith("attention"):
                hidden = hidden + replaced_by_linear(family, example, state, skip, hidden, layer_idx)
        stock_output = stock.model(inputs_embeds=hidden, use_cache=True)
        hidden, cache = stock_output.last_hidden_state, stock_output.past_key_values
        for skip in skips:  # a replaced MLP runs after it, whose MLP added nothing
            if skip in family.linear and skip.startswith("mlp"):
                hidden = hidden + replaced_by_linear(family, example, state, skip, hidden, layer_idx)
        caches.append(cache)
    final_norm = getattr(model.model, family.final_norm)
    return model.get_output_embeddings()(final_norm(hidden)), caches


def replaced_by_linear(family, example, state, skip, hidden, layer_idx) -> torch.Tensor:
    """`W @ norm(x)`, the sub-block a Nemotron-NAS `replace_with_linear` leaves (its norm stays)."""
    norm, member = family.linear[skip]
    eps = {**example.values, **example.layers.get(layer_idx, {})}["rms_norm_eps"]
    return linear(rms_norm(hidden, state[f"{norm}.weight"], eps), state, member)


def cache_tensors(cache_layer: Any) -> dict[str, torch.Tensor]:
    """The states a cache layer holds (keys, values, conv and SSM states; not its private settings such as a sliding
    layer's `_sliding_window_tensor`)."""
    return {
        name: value
        for name, value in vars(cache_layer).items()
        if isinstance(value, torch.Tensor) and not name.startswith("_")
    }


def check_caches(family: Family, example: Example, cache: Any, stock_caches: list[Any]) -> None:
    """Each layer's cache holds what its stock layer's does, in a cache layer of the same class; a layer whose
    sub-block holding state is skipped holds nothing."""
    assert len(cache.layers) == len(stock_caches)
    emptied_by = SKIPS_WITHOUT_CACHE_STATE  # the skip vocabulary: attention, its linear replacement, a mixer
    for layer_idx, (layer, stock_cache) in enumerate(zip(cache.layers, stock_caches)):
        held = {name: tensor for name, tensor in cache_tensors(layer).items() if tensor.numel()}
        if emptied_by & set(skips_of(example, layer_idx)):
            assert not held, (layer_idx, sorted(held))
            continue
        stock_layer = stock_cache.layers[0]
        stock = {name: tensor for name, tensor in cache_tensors(stock_layer).items() if tensor.numel()}
        assert type(layer).__name__ == type(stock_layer).__name__, layer_idx
        assert held.keys() == stock.keys(), layer_idx
        for name, tensor in held.items():
            assert tensor.shape == stock[name].shape, (layer_idx, name)
            torch.testing.assert_close(tensor, stock[name], atol=ATOL, rtol=RTOL)


def check_save_and_load(model: nn.Module, input_ids: torch.Tensor, logits: torch.Tensor) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        # The attention implementation is a run-time choice, not saved: the same one as the original's.
        reloaded = AutoModelForCausalLM.from_pretrained(
            directory, attn_implementation=model.config._attn_implementation
        ).eval()
    assert type(reloaded) is type(model)
    state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert reloaded_state.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(reloaded_state[name], tensor), name
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids).logits, logits)


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
@PROFILE_SETTINGS
@given(data=st.data())
def test_random_per_layer_config_matches_stock_layers_or_is_refused_clearly(family_name, data):
    family = FAMILIES[family_name]
    check_example(family, data.draw(examples(family)))


def test_the_profile_ran_its_configurations():
    """Runs after the property tests (file order): how many configs each architecture built or refused. The CI
    profile must have drawn at least `CI_MINIMUM` configs in all."""
    total = sum(RUNS.values())
    print(f"{PROFILE} profile: {total} configurations")
    for name in sorted(FAMILIES):
        print(f"  {name}: {RUNS[name, 'built']} built, {RUNS[name, 'refused']} refused")
    if PROFILE == "ci":
        assert total >= CI_MINIMUM, dict(RUNS)
