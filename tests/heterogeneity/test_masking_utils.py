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
"""Per-layer attention windows: masks, caches and generation against the reference forward.

Windows [3, None, 5, None] over prompts of 12 tokens, so that every window bites. Mistral sets its window directly;
Qwen2/Qwen3 make every layer a sliding layer (`use_sliding_window`, `max_window_layers=0`) and override the window
per layer, `None` meaning full attention.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import transformers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    StaticCache,
)
from transformers.heterogeneity import HeterogeneousConfigError, kv_cache_bytes, kv_cache_total_bytes
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer, MistralModel

from .conftest import (
    ARCHS,
    TINY,
    VOCAB_SIZE,
    Arch,
    assert_cached_steps_match,
    build_model,
    layer_specs,
    make_input_ids,
)
from .reference import reference_beam_search, reference_forward, reference_greedy


pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
RTOL = 1e-5
GLOBAL_WINDOW = 3
PROMPT_LEN = 12
NEW_TOKENS = 6

CASES = {
    # windows [3, None, 5, None]
    "windows": (4, {1: {"sliding_window": None}, 2: {"sliding_window": 5}, 3: {"sliding_window": None}}),
    # layer 0 holds no KV; windows and KV heads differ on the others
    "attention_skipped_first": (
        4,
        {
            0: {"skip": ["attention"]},
            1: {"sliding_window": None, "num_key_value_heads": 1},
            2: {"sliding_window": 5, "num_key_value_heads": 4},
            3: {"skip": ["mlp"]},
        },
    ),
}
WINDOWED_ARCHS = ["mistral", "qwen2", "qwen3"]


@pytest.fixture(params=WINDOWED_ARCHS)
def arch(request) -> Arch:
    return ARCHS[request.param]


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


def window_kwargs(arch: Arch) -> dict[str, Any]:
    if arch.name == "mistral":
        return {"sliding_window": GLOBAL_WINDOW}
    return {"use_sliding_window": True, "sliding_window": GLOBAL_WINDOW, "max_window_layers": 0}


def setup_case(arch: Arch, case: str, attn_implementation: str = "eager"):
    num_layers, per_layer = CASES[case]
    model = build_model(arch, per_layer, num_layers, attn_implementation, **window_kwargs(arch))
    specs = layer_specs(arch, per_layer, num_layers, sliding_window=GLOBAL_WINDOW)
    return model, specs


def logits_of(model, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids, **kwargs).logits


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_forward_matches_reference(arch, case, attn_implementation):
    model, specs = setup_case(arch, case, attn_implementation)
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    expected = reference_forward(model.state_dict(), specs, input_ids)
    torch.testing.assert_close(logits_of(model, input_ids), expected, atol=ATOL, rtol=RTOL)
    # An all-ones padding mask is the same input.
    with_mask = logits_of(model, input_ids, attention_mask=torch.ones_like(input_ids))
    torch.testing.assert_close(with_mask, expected, atol=ATOL, rtol=RTOL)


def test_windows_bite():
    """The prompt is longer than every window: a model with all layers at full attention gives other logits."""
    arch = ARCHS["mistral"]
    model, specs = setup_case(arch, "windows")
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    full = [type(spec)(**{**spec.__dict__, "window": None}) for spec in specs]
    assert not torch.allclose(logits_of(model, input_ids), reference_forward(model.state_dict(), full, input_ids))


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_generate_matches_reference(arch, case, cache_implementation):
    model, specs = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    generated = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        cache_implementation=cache_implementation,
    )
    expected = reference_greedy(model.state_dict(), specs, input_ids, NEW_TOKENS)
    assert torch.equal(generated, expected), (generated, expected)


@pytest.mark.parametrize("cache_cls", [DynamicCache, StaticCache])
def test_cached_decoding_equals_uncached(arch, case, cache_cls):
    """Token by token through the cache, each step's logits equal a full recompute (itself equal to the reference)."""
    model, specs = setup_case(arch, case)
    input_ids = make_input_ids(seq_len=PROMPT_LEN + NEW_TOKENS)
    full = logits_of(model, input_ids)
    torch.testing.assert_close(full, reference_forward(model.state_dict(), specs, input_ids), atol=ATOL, rtol=RTOL)
    kwargs = {"max_cache_len": input_ids.shape[1]} if cache_cls is StaticCache else {}
    cache = cache_cls(config=model.config, **kwargs)
    assert_cached_steps_match(model, input_ids, PROMPT_LEN, cache, full)


def test_beam_search_matches_reference(arch, case):
    model, specs = setup_case(arch, case)
    input_ids = make_input_ids(batch_size=1, seq_len=PROMPT_LEN)
    generated = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        num_beams=3,
        max_new_tokens=NEW_TOKENS,
        length_penalty=0.0,
    )
    expected = reference_beam_search(model.state_dict(), specs, input_ids, NEW_TOKENS, num_beams=3)
    assert torch.equal(generated, expected), (generated, expected)


def test_one_mask_per_distinct_setting_and_forward(sdpa_mask_sizes):
    """Windows [3, None, 5, None]: three distinct masks per forward, whatever the number of layers."""
    built = sdpa_mask_sizes
    num_layers = 8
    windows = [3, None, 5, None, 3, 5, None, 3]
    per_layer = {idx: {"sliding_window": window} for idx, window in enumerate(windows) if window != GLOBAL_WINDOW}
    model = build_model(ARCHS["mistral"], per_layer, num_layers, "sdpa", sliding_window=GLOBAL_WINDOW)
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    logits_of(model, input_ids)
    assert sorted(built, key=str) == [3, 5, None]
    built.clear()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids, past_key_values=cache, use_cache=True)
        model(input_ids[:, :1], past_key_values=cache, use_cache=True)
    assert sorted(built, key=str) == [3, 3, 5, 5, None, None]


def test_caches_hold_only_each_layers_window(arch, case):
    """After N tokens a DynamicCache keeps min(N, window - 1) tokens per windowed layer and N for full layers (the
    theoretical minimum, which the accounting helper gives); a StaticCache allocates min(max_cache_len, window)."""
    model, specs = setup_case(arch, case)
    batch_size, num_tokens, max_cache_len = 2, PROMPT_LEN, 16
    input_ids = make_input_ids(batch_size=batch_size, seq_len=num_tokens)
    dynamic = DynamicCache(config=model.config)
    static = StaticCache(config=model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(input_ids, past_key_values=dynamic, use_cache=True)
        model(input_ids, past_key_values=static, use_cache=True)

    element_size = 4  # fp32
    sizes = {size.layer_idx: size for size in kv_cache_bytes(model.config, torch.float32)}
    assert sorted(sizes) == [idx for idx, spec in enumerate(specs) if spec.attention]
    for layer_idx, spec in enumerate(specs):
        dynamic_layer, static_layer = dynamic.layers[layer_idx], static.layers[layer_idx]
        if not spec.attention:
            assert dynamic_layer.keys is None and static_layer.keys is None
            continue
        per_token = 2 * spec.num_kv_heads * spec.head_dim * element_size * batch_size
        kept = num_tokens if spec.window is None else min(num_tokens, spec.window - 1)
        slots = max_cache_len if spec.window is None else min(max_cache_len, spec.window)
        assert dynamic_layer.keys.shape == (batch_size, spec.num_kv_heads, kept, spec.head_dim)
        assert static_layer.keys.shape == (batch_size, spec.num_kv_heads, slots, spec.head_dim)
        assert sizes[layer_idx].bytes_for(num_tokens, batch_size) == kept * per_token
        assert sizes[layer_idx].static_bytes(max_cache_len, batch_size) == slots * per_token
        assert sizes[layer_idx].window == spec.window
    held = sum(2 * layer.keys.numel() * element_size for layer in dynamic.layers if layer.keys is not None)
    assert kv_cache_total_bytes(model.config, num_tokens, torch.float32, batch_size) == held


def test_static_cache_reset_with_windows(arch):
    model, _ = setup_case(arch, "attention_skipped_first")
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    static = StaticCache(config=model.config, max_cache_len=16)
    first = logits_of(model, input_ids, past_key_values=static, use_cache=True)
    static.reset()
    assert static.get_seq_length() == 0
    torch.testing.assert_close(logits_of(model, input_ids, past_key_values=static, use_cache=True), first)


def test_dynamic_cache_crop_with_windows(arch):
    """Cropping the last token (layer 0 holds nothing; windows not reached yet) and feeding another one gives the
    logits of a full recompute of the new sequence."""
    model, _ = setup_case(arch, "attention_skipped_first")
    input_ids = make_input_ids(seq_len=2)
    cache = DynamicCache(config=model.config)
    logits_of(model, input_ids, past_key_values=cache, use_cache=True)
    cache.crop(-1)
    assert cache.get_seq_length() == 1
    replacement = (input_ids[:, 1:] + 1) % VOCAB_SIZE
    step = logits_of(model, replacement, past_key_values=cache, use_cache=True)
    full = logits_of(model, torch.cat([input_ids[:, :1], replacement], dim=1))
    torch.testing.assert_close(step[:, 0], full[:, 1], atol=ATOL, rtol=RTOL)


def test_compiled_decode_matches_eager():
    """`torch.compile(fullgraph=True)` traces a decode step of a model with per-layer windows, skipped attention and
    per-layer KV heads in one graph, and decodes the same tokens as eager."""
    model, _ = setup_case(ARCHS["mistral"], "attention_skipped_first", "sdpa")
    input_ids = make_input_ids(batch_size=1, seq_len=PROMPT_LEN)

    def decode(forward) -> list[int]:
        cache = StaticCache(config=model.config, max_cache_len=PROMPT_LEN + NEW_TOKENS)
        with torch.no_grad():
            logits = model(input_ids, past_key_values=cache, use_cache=True).logits
            tokens = [int(logits[0, -1].argmax())]
            for step in range(NEW_TOKENS - 1):
                position = torch.tensor([[PROMPT_LEN + step]])
                logits = forward(
                    input_ids=torch.tensor([[tokens[-1]]]),
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                ).logits
                tokens.append(int(logits[0, -1].argmax()))
        return tokens

    torch._dynamo.reset()
    # `aot_eager` traces exactly what inductor would (graph breaks included) without its ~40 s of code generation.
    compiled = torch.compile(model.forward, fullgraph=True, backend="aot_eager")
    assert decode(compiled) == decode(model.forward)


def test_window_on_a_full_attention_layer_type_is_refused():
    """Qwen3's `layer_types` make layer 1 a full-attention layer: a window there would be silently dropped."""
    config = Qwen3Config(**TINY, sliding_window=None, per_layer_config={1: {"sliding_window": 4}})
    with pytest.raises(
        HeterogeneousConfigError,
        match=r"Layer 1: `sliding_window`=4 would be ignored: the layer attends as 'full_attention' "
        r"\(config.layer_types\[1\]='full_attention'\)",
    ):
        Qwen3ForCausalLM(config)


def test_window_on_llama_is_refused():
    """Llama's attention has no window (flash attention would ignore a mask-only window): refused, not emulated."""
    per_layer = {idx: {"sliding_window": 4} for idx in range(TINY["num_hidden_layers"])}
    with pytest.raises(
        HeterogeneousConfigError, match=r"Layer 0: `sliding_window`=4 is not read by LlamaDecoderLayer"
    ):
        LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=per_layer))


def test_caller_4d_mask_is_used_as_given():
    """A prepared 4D mask is the caller's decision: every layer receives it unchanged."""
    model, specs = setup_case(ARCHS["mistral"], "windows")
    input_ids = make_input_ids(batch_size=1, seq_len=PROMPT_LEN)
    causal = torch.ones(PROMPT_LEN, PROMPT_LEN, dtype=torch.bool).tril()
    mask = torch.zeros(1, 1, PROMPT_LEN, PROMPT_LEN).masked_fill(~causal, torch.finfo(torch.float32).min)
    full = [type(spec)(**{**spec.__dict__, "window": None}) for spec in specs]
    torch.testing.assert_close(
        logits_of(model, input_ids, attention_mask=mask),
        reference_forward(model.state_dict(), full, input_ids),
        atol=ATOL,
        rtol=RTOL,
    )


def test_caller_mapping_by_layer_type_gives_each_layer_the_mask_of_its_kind():
    """A mapping keyed by layer type (as continuous batching prepares it) is routed by each layer's own kind: here the
    sliding layers (windows 3 and 5) all receive the given window-2 mask, the full layers the causal one."""
    model, specs = setup_case(ARCHS["mistral"], "windows")
    input_ids = make_input_ids(batch_size=1, seq_len=PROMPT_LEN)
    positions = torch.arange(PROMPT_LEN)
    distance = positions[:, None] - positions[None, :]
    min_value = torch.finfo(torch.float32).min
    masks = {
        kind: torch.zeros(1, 1, PROMPT_LEN, PROMPT_LEN).masked_fill(~allowed, min_value)
        for kind, allowed in (
            ("full_attention", distance >= 0),
            ("sliding_attention", (distance >= 0) & (distance < 2)),
        )
    }
    expected = [type(spec)(**{**spec.__dict__, "window": None if spec.window is None else 2}) for spec in specs]
    torch.testing.assert_close(
        logits_of(model, input_ids, attention_mask=masks),
        reference_forward(model.state_dict(), expected, input_ids),
        atol=ATOL,
        rtol=RTOL,
    )


def test_save_load_round_trip_keeps_windows(arch, tmp_path):
    model, specs = setup_case(arch, "windows")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert [layer_config.sliding_window for layer_config in reloaded.config.per_layer_config] == [
        spec.window for spec in specs
    ]
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    assert torch.equal(logits_of(reloaded, input_ids), logits_of(model, input_ids))


def test_base_model_config_works_wherever_a_stock_config_does(arch):
    """The base model reads its window globally through a second face of the config (`model_level_config`); the
    Auto classes and every head class must take it like the stock config: same model, same logits."""
    model, _ = setup_case(arch, "windows")
    base_config = model.model.config
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    for build in (AutoModelForCausalLM.from_config, arch.model_cls):
        rebuilt = build(base_config).eval()
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(logits_of(rebuilt, input_ids), logits_of(model, input_ids))
    base = AutoModel.from_config(base_config).eval()
    base.load_state_dict(model.model.state_dict())
    with torch.no_grad():
        assert torch.equal(base(input_ids).last_hidden_state, model.model(input_ids).last_hidden_state)
    question_answering = getattr(transformers, f"{arch.prefix}ForQuestionAnswering")(base_config)
    assert [layer.self_attn.config.sliding_window for layer in question_answering.base_model.layers] == [
        layer_config.sliding_window for layer_config in model.config.per_layer_config
    ]


class ToyMistralConfig(MistralConfig):
    model_type = "toy_mistral"


class ToyMistralForCausalLM(MistralForCausalLM):
    """A custom model type that opts in with class attributes only, per-layer windows included."""

    config_class = ToyMistralConfig
    _layer_cls = MistralDecoderLayer
    _skip_descriptors = {}
    _base_model_cls = MistralModel
    _base_model_forward_reads = frozenset({"sliding_window"})


class ToyMistralWithoutMasksForCausalLM(ToyMistralForCausalLM):
    _base_model_cls = None


def test_custom_model_opts_in_to_per_layer_windows():
    arch = ARCHS["mistral"]
    model, specs = setup_case(arch, "windows")  # also wraps the stock layer class with the built-in Mistral spec
    config = ToyMistralConfig(**{**model.config.to_dict(), "model_type": ToyMistralConfig.model_type})
    # A custom class may declare its own layers for a built-in model type too: caches know from the skip vocabulary
    # which layers hold no KV, so nothing is looked up by model type on its behalf.
    assert isinstance(ToyMistralForCausalLM(model.config).model.layers[0], MistralDecoderLayer)
    # Without a base model to build masks in, the windows would be ignored: refused.
    with pytest.raises(
        HeterogeneousConfigError, match=r"Layer 1: `sliding_window`=None is not read by MistralDecoder"
    ):
        ToyMistralWithoutMasksForCausalLM(config)
    custom = ToyMistralForCausalLM(config).eval()
    custom.load_state_dict(model.state_dict())
    input_ids = make_input_ids(seq_len=PROMPT_LEN)
    expected = reference_forward(model.state_dict(), specs, input_ids)
    torch.testing.assert_close(logits_of(custom, input_ids), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("arch_name", WINDOWED_ARCHS)
def test_a_layer_deprived_of_its_mask_raises(arch_name):
    """Masks fail closed: a layer that attends with its own window and does not receive its per-layer masks (a base
    model whose forward does not pass its keyword arguments on) raises, naming the layer, instead of computing with
    the base model's placeholder mask."""
    from transformers.heterogeneity.masking_utils import MASKS_KWARG, MissingLayerMaskError

    model, _ = setup_case(ARCHS[arch_name], "windows")
    stripped = model.model.layers[1]

    def drop_masks(module, args, kwargs):
        kwargs.pop(MASKS_KWARG, None)
        return args, kwargs

    stripped.register_forward_pre_hook(drop_masks, with_kwargs=True, prepend=True)
    with pytest.raises(MissingLayerMaskError, match=r"Layer 1 \(\w+DecoderLayer\) attends with its own"):
        model(make_input_ids(seq_len=PROMPT_LEN))


def test_the_placeholder_mask_cannot_be_computed_with():
    """What the base model holds as its attention mask while the layers build theirs is empty: an attention that
    used it anyway would fail to broadcast it, never attend to everything."""
    from transformers.heterogeneity.masking_utils import _deferred_mask_placeholder

    placeholder = _deferred_mask_placeholder()
    query = key = value = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=placeholder)
    with pytest.raises(RuntimeError):
        torch.randn(1, 2, 4, 4) + placeholder[:, :, :, :4]
