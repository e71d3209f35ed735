"""Caches of heterogeneous models: layers without attention hold no KV and never answer for the sequence length."""

import pytest
import torch

from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache
from transformers.cache_utils import DummyLayer
from transformers.heterogeneity import kv_cache_bytes, layers_without_kv_cache


TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
}
PER_LAYER = {0: {"skip": ["attention"]}, 1: {"num_key_value_heads": 1}, 3: {"head_dim": 8, "skip": ["mlp"]}}
PROMPT = torch.tensor([[3, 17, 42, 8, 99, 5]])


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=PER_LAYER)).eval()


@pytest.mark.parametrize("cache_cls", [DynamicCache, StaticCache])
def test_skipped_attention_layer_is_a_dummy_cache_layer(model, cache_cls):
    kwargs = {"max_cache_len": 16} if cache_cls is StaticCache else {}
    cache = cache_cls(config=model.config, **kwargs)
    assert [isinstance(layer, DummyLayer) for layer in cache.layers] == [True, False, False, False]
    assert layers_without_kv_cache(model.config) == [0]


def test_sequence_length_is_read_from_a_layer_that_holds_kv(model):
    cache = DynamicCache(config=model.config)
    model(PROMPT, past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == PROMPT.shape[1]
    model(torch.tensor([[7]]), past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == PROMPT.shape[1] + 1
    cache.crop(-3)  # upstream's convention: a negative count removes that many tokens
    assert cache.get_seq_length() == PROMPT.shape[1] + 1 - 3


def test_static_cache_generation_equals_dynamic(model):
    dynamic = model.generate(PROMPT, max_new_tokens=6, do_sample=False)
    static = model.generate(PROMPT, max_new_tokens=6, do_sample=False, cache_implementation="static")
    uncached = model.generate(PROMPT, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(dynamic, static) and torch.equal(dynamic, uncached)


def test_static_cache_allocates_per_layer_shapes(model):
    cache = StaticCache(config=model.config, max_cache_len=16)
    model(PROMPT, past_key_values=cache, use_cache=True)
    shapes = [None if layer.keys is None else tuple(layer.keys.shape) for layer in cache.layers]
    # Written out from the config: layer 1 has 1 KV head, layer 3 a head_dim of 8, layer 0 no attention.
    assert shapes == [None, (1, 1, 16, 16), (1, 2, 16, 16), (1, 2, 16, 8)]


def test_beam_search_runs_and_matches_uncached_beams(model):
    cached = model.generate(PROMPT, max_new_tokens=5, num_beams=3, do_sample=False)
    uncached = model.generate(PROMPT, max_new_tokens=5, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_kv_cache_bytes_leaves_out_layers_without_attention(model):
    sizes = kv_cache_bytes(model.config, dtype=torch.float32)
    # 2 (K and V) * kv_heads * head_dim * 4 bytes, written out for layers 1, 2, 3.
    assert {size.layer_idx: size.bytes_per_token for size in sizes} == {
        1: 2 * 1 * 16 * 4,
        2: 2 * 2 * 16 * 4,
        3: 2 * 2 * 8 * 4,
    }
    assert sum(size.bytes_for(10, batch_size=2) for size in sizes) == 2 * 10 * (128 + 256 + 128)


def test_exported_program_returns_each_layers_keys_in_place(model):
    """`torch.export` flattens the cache without its empty layers; the layer without KV (layer 0) must come back as a
    dummy layer in its place, every other layer with its own keys (as the eager model returns them)."""
    from transformers.integrations.executorch import export_with_dynamic_cache

    attention_mask = torch.ones_like(PROMPT)
    exported = export_with_dynamic_cache(model, PROMPT, attention_mask)
    with torch.no_grad():
        expected = model(PROMPT, attention_mask=attention_mask, past_key_values=DynamicCache(config=model.config))
        returned = exported.module()(
            input_ids=PROMPT,
            attention_mask=attention_mask,
            past_key_values=DynamicCache(config=model.config),
            use_cache=True,
        )
    assert torch.equal(returned.logits, expected.logits)
    cache, expected_cache = returned.past_key_values, expected.past_key_values
    assert [type(layer) for layer in cache.layers] == [type(layer) for layer in expected_cache.layers]
    for layer, expected_layer in zip(cache.layers[1:], expected_cache.layers[1:]):
        assert torch.equal(layer.keys, expected_layer.keys) and torch.equal(layer.values, expected_layer.values)


def test_homogeneous_cache_keeps_upstreams_export_layout():
    from transformers.integrations import executorch

    torch.manual_seed(0)
    homogeneous = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    cache = DynamicCache(config=homogeneous.config)
    homogeneous(PROMPT, past_key_values=cache)
    # Upstream's layout (transformers 5.23, `integrations/executorch.py`): each layer's `sliding_window`, `None` for Llama
    assert executorch._get_dynamic_cache_layout(cache) == [None] * TINY["num_hidden_layers"]
