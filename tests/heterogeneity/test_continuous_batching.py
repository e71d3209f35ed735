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
"""Continuous batching of heterogeneous models: per-layer pages, one page group per window, outputs equal to
`generate`, clear refusals.

`generate_batch` and `ContinuousBatchingManager` run many requests of different lengths at once, with pages small
enough that requests span several pages, prefills are split across steps and windows wrap around their ring buffer.
Every request's tokens must equal the greedy `generate` of the same model on that prompt alone (`generate` itself is
checked against the independent reference in the architecture tests). Page sizes, group memberships and admission
counts are checked against arithmetic written here from the test's numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from transformers import (
    ContinuousBatchingConfig,
    GenerationConfig,
    GptOssConfig,
    GptOssForCausalLM,
    Llama4ForCausalLM,
    Llama4TextConfig,
)
from transformers.generation.continuous_batching import PagedAttentionCache, cache_allocators
from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager
from transformers.heterogeneity.continuous_batching import HeterogeneousPagedAttentionCache
from transformers.heterogeneity.continuous_batching_plan import UnservableLayerError, plan_serving

from .conftest import ARCHS, build_model
from .gpt_oss_checkpoints import GPT_OSS_GLOBALS
from .nemotron_h_models import make_config as nemotron_h_config


pytestmark = pytest.mark.usefixtures("single_thread")

PAGE_SIZE = 4
MAX_NEW_TOKENS = 6
PROMPT_LENGTHS = (3, 9, 5, 14, 1, 7, 11, 4)  # different lengths, several pages, some longer than a window
WINDOW = 6


def cb_config(**kwargs: Any) -> ContinuousBatchingConfig:
    """Small pages and batches, so requests share steps, prefills are chunked and the cache pages wrap."""
    values = {
        "page_size": PAGE_SIZE,
        "num_blocks": 64,
        "max_batch_tokens": 24,
        "use_cuda_graph": False,
        "use_async_batching": False,
    }
    return ContinuousBatchingConfig(**{**values, **kwargs})


def prompts(vocab_size: int, lengths: tuple[int, ...] = PROMPT_LENGTHS, seed: int = 3) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (length,), generator=generator).tolist() for length in lengths]


def greedy_config() -> GenerationConfig:
    return GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=None)


def generate_tokens(model, prompt: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=greedy_config())
    return out[0, len(prompt) :].tolist()


def batch_tokens(model, batch: list[list[int]], **config: Any) -> list[list[int]]:
    outputs = model.generate_batch(batch, greedy_config(), cb_config(**config), warmup=False)
    by_prompt = {tuple(output.prompt_ids): output.generated_tokens for output in outputs.values()}
    return [by_prompt[tuple(prompt)] for prompt in batch]


def assert_batch_equals_generate(model, vocab_size: int, **config: Any) -> None:
    batch = prompts(vocab_size)
    served = batch_tokens(model, batch, **config)
    for prompt, tokens in zip(batch, served):
        assert len(tokens) == MAX_NEW_TOKENS, f"prompt of {len(prompt)} tokens: {tokens}"
        assert tokens == generate_tokens(model, prompt), f"prompt of {len(prompt)} tokens"
    assert len({tuple(tokens) for tokens in served}) > len(batch) // 2, f"near-constant generations: {served}"


# Per-layer KV heads, attention heads / head_dim, skipped and linear attention, for the Llama family.
LLAMA_FAMILY_CASES = {
    "kv_heads_and_skips": {
        0: {"num_key_value_heads": 1},
        1: {"skip": ["attention"]},
        2: {"num_attention_heads": 8, "num_key_value_heads": 4},
        3: {"skip": ["mlp"]},
    },
    "linear_and_head_dim": {
        0: {"skip": ["attention_replaced_by_linear"]},
        1: {"num_key_value_heads": 4, "num_attention_heads": 8},
        2: {"intermediate_size": 32},
        3: {"num_key_value_heads": 1},
    },
}


def with_head_dim(arch_name: str, per_layer: dict) -> dict:
    """Adds a per-layer head_dim where the config stores one (Qwen2 derives it from the heads)."""
    if ARCHS[arch_name].implicit_head_dim:
        return per_layer
    return {**per_layer, 2: {**per_layer.get(2, {}), "head_dim": 8}}


@pytest.mark.parametrize("case", sorted(LLAMA_FAMILY_CASES))
@pytest.mark.parametrize("arch_name", sorted(ARCHS))
def test_generate_batch_equals_generate_llama_family(arch_name, case):
    per_layer = with_head_dim(arch_name, LLAMA_FAMILY_CASES[case])
    model = build_model(ARCHS[arch_name], per_layer, num_layers=4)
    assert_batch_equals_generate(model, model.config.vocab_size)


def test_generate_batch_equals_generate_sdpa():
    per_layer = with_head_dim("llama", LLAMA_FAMILY_CASES["kv_heads_and_skips"])
    model = build_model(ARCHS["llama"], per_layer, 4, "sdpa")
    assert_batch_equals_generate(model, model.config.vocab_size)


def test_shared_prefixes_and_a_cache_too_small_for_all_requests():
    """Prompts sharing a prefix of whole pages (upstream shares those blocks between requests), and a cache that holds
    only a few requests at once (the others wait, or are offloaded and restored)."""
    per_layer = with_head_dim("llama", LLAMA_FAMILY_CASES["kv_heads_and_skips"])
    model = build_model(ARCHS["llama"], per_layer, 4)
    prefix = prompts(model.config.vocab_size, (3 * PAGE_SIZE,), seed=7)[0]
    batch = [prefix + tail for tail in prompts(model.config.vocab_size, (1, 5, 2, 7), seed=8)]
    for config in ({}, {"num_blocks": 6, "max_batch_tokens": 16}):
        served = batch_tokens(model, batch, **config)
        assert served == [generate_tokens(model, prompt) for prompt in batch], config


def test_homogeneous_models_keep_upstreams_cache():
    """No `per_layer_config`: upstream's own cache class and the model's own config, and the same tokens."""
    model = build_model(ARCHS["mistral"], None, 3, sliding_window=WINDOW)
    cache = served_cache(model)
    assert type(cache) is PagedAttentionCache
    assert cache.config is model.config.get_text_config()
    assert_batch_equals_generate(model, model.config.vocab_size)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_generate_batch_equals_generate_per_layer_windows(attn_implementation):
    """Mistral with a window on most layers, full attention on one and a skipped attention: the windowed layers page
    only their window (a ring buffer that prompts of 14 tokens + 6 new wrap several times)."""
    per_layer = {1: {"sliding_window": None, "num_key_value_heads": 1}, 2: {"skip": ["attention"]}, 3: {"head_dim": 8}}
    model = build_model(ARCHS["mistral"], per_layer, 4, attn_implementation, sliding_window=WINDOW)
    assert_batch_equals_generate(model, model.config.vocab_size)
    cache = served_cache(model)
    assert groups_of(cache) == {"sliding_attention": ([0, 3], WINDOW), "full_attention": ([1], None)}


def groups_of(cache: PagedAttentionCache) -> dict[str, tuple[list[int], int | None]]:
    """Each allocator's layers and window, by the group name that keys it."""
    return {
        name: (list(a.layer_pages), getattr(a, "sliding_window", None)) for name, a in cache.cache_allocators.items()
    }


# Windows 6 (global: layers 0 and 4), 3 and 10, full attention on layer 1: prompts of 1 to 14 tokens are shorter and
# longer than each window.
SEVERAL_WINDOWS = {
    1: {"sliding_window": None, "num_key_value_heads": 1},
    2: {"sliding_window": 3},
    3: {"sliding_window": 10, "head_dim": 8},
}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_generate_batch_equals_generate_several_windows(attn_implementation):
    """One page group per window, each with its own key lengths and mask, and one for full attention."""
    model = build_model(ARCHS["mistral"], SEVERAL_WINDOWS, 5, attn_implementation, sliding_window=WINDOW)
    assert_batch_equals_generate(model, model.config.vocab_size)
    cache = served_cache(model)
    assert groups_of(cache) == {
        "sliding_attention_6": ([0, 4], 6),
        "full_attention": ([1], None),
        "sliding_attention_3": ([2], 3),
        "sliding_attention_10": ([3], 10),
    }
    # A windowed group holds a request's window (its ring buffer), the full group every token.
    long_request = 10 * PAGE_SIZE
    needed = {name: a.needs_new_blocks("r", 0, long_request) for name, a in cache.cache_allocators.items()}
    assert needed == {
        "sliding_attention_6": 2,
        "full_attention": 10,
        "sliding_attention_3": 1,
        "sliding_attention_10": 3,
    }


def test_only_windowed_layers_read_at_most_the_largest_window():
    """Without a full-attention layer a request never reads more than its largest window (upstream's limit for one)."""
    per_layer = {1: {"sliding_window": 3}, 2: {"skip": ["attention"]}}
    model = build_model(ARCHS["mistral"], per_layer, 3, sliding_window=WINDOW)
    assert_batch_equals_generate(model, model.config.vocab_size)
    assert served_cache(model).read_cache_limit == WINDOW


def test_admission_needs_room_in_every_group():
    """A cache of 20 sectors: sequences of 40 tokens admitted one by one while every group has room.

    Blocks (fp32, PAGE_SIZE tokens): group 6 = layers 0, 4 (2 heads x 16 each) -> 2 * (2*2*16*4*4) = 2048 bytes;
    group 3 = layer 2 -> 1024; group 10 = layer 3 (2 x 8) -> 512; full = layer 1 (1 x 16) -> 512. A sector is their
    lcm, 2048 bytes: 1, 2, 4 and 4 blocks of these groups. A 40-token sequence needs 2, 1, 3 and 10 blocks. Sectors
    taken, counting the blocks left free in a group's sectors by the sequences before:
    1st: 2 + 1 (1 block left) + 1 (1 left) + 3 (2 left) = 7; 2nd: 2 + 0 + 1 (2 left) + 2 (0 left) = 5;
    3rd: 2 + 1 + 1 + 3 = 7, 19 in all; the 4th needs 2 more for group 6, and 1 is left: 3 are admitted."""
    model = build_model(ARCHS["mistral"], SEVERAL_WINDOWS, 5, sliding_window=WINDOW)
    bytes_per_model_block = 2048 + 1024 + 512 + 512
    cache = served_cache(model, num_blocks=20 * 2048 // bytes_per_model_block)
    assert cache.bytes_per_sector == 2048 and cache.num_sectors == 20
    assert cache.bytes_per_model_block == bytes_per_model_block
    long_request = 10 * PAGE_SIZE
    needed = {name: a.needs_new_blocks("r", 0, long_request) for name, a in cache.cache_allocators.items()}
    assert cache.count_storable_requests([needed] * 5) == 3


# GPT-OSS (sinks, `layer_types` sliding / full / sliding / sliding) with per-layer KV heads and experts, and a skipped
# attention or a second window; the page groups each case must get.
GPT_OSS_CASES = {
    "skipped_attention": (
        {0: {"num_key_value_heads": 1}, 1: {"num_local_experts": 2}, 2: {"skip": ["attention"]}},
        {"sliding_attention": ([0, 3], WINDOW), "full_attention": ([1], None)},
    ),
    "several_windows": (
        {0: {"num_key_value_heads": 1}, 1: {"num_local_experts": 2}, 2: {"sliding_window": 3}},
        {"sliding_attention_6": ([0, 3], 6), "full_attention": ([1], None), "sliding_attention_3": ([2], 3)},
    ),
}


@pytest.mark.parametrize("case", sorted(GPT_OSS_CASES))
def test_generate_batch_equals_generate_gpt_oss(case):
    per_layer, groups = GPT_OSS_CASES[case]
    config = GptOssConfig(
        **{**GPT_OSS_GLOBALS, "sliding_window": WINDOW},
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        per_layer_config=per_layer,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = GptOssForCausalLM(config).eval()
    assert_batch_equals_generate(model, config.vocab_size)
    assert groups_of(served_cache(model)) == groups


def served_cache(model, **config: Any) -> PagedAttentionCache:
    manager = ContinuousBatchingManager(model, greedy_config(), cb_config(**config))
    try:
        return manager._create_batch_processor().cache
    finally:
        manager.destroy()
        if manager._original_attn_impl is not None:  # an unstarted manager's `stop` does not switch it back
            model.set_attn_implementation(manager._original_attn_impl)


def kv_layer_bytes(heads: int, head_dim: int, itemsize: int = 4) -> int:
    """Bytes of one page of one layer: keys and values of `heads` heads of `head_dim` for PAGE_SIZE tokens (fp32)."""
    return 2 * heads * head_dim * itemsize * PAGE_SIZE


def test_pages_of_each_layer_have_its_own_shape():
    """Layers 0-3: KV heads 1, none (skipped), 4 x head_dim 8, none (linear); layer 4 is the global 2 x 16."""
    per_layer = {
        0: {"num_key_value_heads": 1},
        1: {"skip": ["attention"]},
        2: {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8},
        3: {"skip": ["attention_replaced_by_linear"]},
    }
    model = build_model(ARCHS["llama"], per_layer, 5)
    cache = served_cache(model)
    assert isinstance(cache, HeterogeneousPagedAttentionCache)
    expected_shapes = {0: (1, 16), 2: (4, 8), 4: (2, 16)}
    (allocator,) = cache.cache_allocators.values()
    assert sorted(allocator.layer_pages) == sorted(expected_shapes)
    for layer_idx, (heads, head_dim) in expected_shapes.items():
        keys, values = allocator.page_views(layer_idx)
        assert (
            keys.shape
            == values.shape
            == (allocator.num_blocks + 2 * allocator.blocks_per_sector, PAGE_SIZE, heads, head_dim)
        )
    block_bytes = sum(kv_layer_bytes(*shape) for shape in expected_shapes.values())
    assert allocator.bytes_per_block == cache.bytes_per_model_block == block_bytes
    # The homogeneous parent's block holds 5 layers of 2 x 16: the same budget holds this many times more tokens.
    assert 5 * kv_layer_bytes(2, 16) / block_bytes == (5 * 2 * 16) / (1 * 16 + 4 * 8 + 2 * 16)
    assert cache.cache_tensor.numel() == (cache.num_sectors + 2) * cache.bytes_per_sector
    assert cache.num_sectors * cache.bytes_per_sector // block_bytes >= 64  # `num_blocks` whole-model blocks


def test_layers_whose_row_does_not_divide_the_block_are_addressed_by_page():
    """Rows of 2 x 16 (layers 0, 2) and 2 x 24 (layer 1) elements: a block of PAGE_SIZE tokens of each is
    2 * 4 * (32 + 48 + 32) = 896 elements, which 32 divides (those layers read and write rows) and 48 does not (that
    layer addresses its pages by block and slot); every request's tokens still equal `generate`."""
    model = build_model(ARCHS["llama"], {1: {"head_dim": 24}}, 3)
    assert_batch_equals_generate(model, model.config.vocab_size)
    (allocator,) = served_cache(model).cache_allocators.values()
    assert {layer_idx: access[2] for layer_idx, access in allocator._access.items()} == {0: 28, 1: None, 2: 28}


def test_pages_of_one_layer_never_overlap_another():
    """Writes to every layer's pages of every block land in distinct bytes of the cache tensor."""
    per_layer = {0: {"num_key_value_heads": 1}, 2: {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8}}
    cache = served_cache(build_model(ARCHS["llama"], per_layer, 3))
    (allocator,) = cache.cache_allocators.values()
    written = torch.zeros_like(cache.cache_tensor, dtype=torch.int32)
    no_zero_byte = torch.tensor([0x3F818283], dtype=torch.int32).view(torch.float32).item()  # bytes 83 82 81 3F
    for keys, values in map(allocator.page_views, allocator.layer_pages):
        for view in (keys, values):
            cache.cache_tensor.zero_()
            view.fill_(no_zero_byte)
            written += (cache.cache_tensor != 0).int()
    assert written.max().item() == 1
    assert (written == 1).sum().item() == cache.cache_tensor.numel()  # and together they fill the whole tensor


def test_windowed_layers_page_only_their_window():
    per_layer = {1: {"sliding_window": None}}
    cache = served_cache(build_model(ARCHS["mistral"], per_layer, 3, sliding_window=WINDOW))
    sliding, full = cache.cache_allocators["sliding_attention"], cache.cache_allocators["full_attention"]
    assert (list(sliding.layer_pages), list(full.layer_pages)) == ([0, 2], [1])
    long_request = 10 * PAGE_SIZE
    assert sliding.needs_new_blocks("r", 0, long_request) == -(-WINDOW // PAGE_SIZE)
    assert full.needs_new_blocks("r", 0, long_request) == 10


def test_manager_serves_streaming_and_final_results():
    """`ContinuousBatchingManager` used directly: requests added while others run, streamed and not."""
    per_layer = {0: {"num_key_value_heads": 1}, 2: {"skip": ["attention"]}}
    model = build_model(ARCHS["qwen3"], per_layer, 3)
    batch = prompts(model.config.vocab_size)
    manager = model.init_continuous_batching(greedy_config(), cb_config())
    manager.start()
    try:
        streamed = manager.add_request(batch[0], request_id="streamed", max_new_tokens=MAX_NEW_TOKENS, streaming=True)
        ids = [manager.add_request(p, request_id=f"r{i}", max_new_tokens=MAX_NEW_TOKENS) for i, p in enumerate(batch)]
        chunks = [output.generated_tokens[:] for output in manager.request_id_iter(streamed)]
        results = {}
        while len(results) < len(ids):
            output = manager.get_result(timeout=60)
            assert output is not None, "the manager stopped before every request finished"
            results[output.request_id] = output.generated_tokens
    finally:
        manager.stop(block=True, timeout=60)
    assert chunks[-1] == generate_tokens(model, batch[0]) and len(chunks) > 1
    for request_id, prompt in zip(ids, batch):
        assert results[request_id] == generate_tokens(model, prompt)


def llama4_model():
    from .test_llama4 import GLOBAL

    return Llama4ForCausalLM(Llama4TextConfig(**GLOBAL, per_layer_config={0: {"num_key_value_heads": 1}}))


def nemotron_h_model(blocks: list[str]):
    from transformers import NemotronHForCausalLM

    return NemotronHForCausalLM(nemotron_h_config(blocks, {0: {"num_key_value_heads": 1}}))


REFUSED = {
    "llama4_chunked": (llama4_model, r"Layer 0: continuous batching cannot serve a 'chunked_attention' layer"),
    "nemotron_h_mamba": (
        lambda: nemotron_h_model(["attention", "mamba", "moe"]),
        r"Layer 1: continuous batching cannot serve a 'linear_attention' layer",
    ),
    "nemotron_h_moe": (
        lambda: nemotron_h_model(["attention", "moe"]),
        r"Layer 1: continuous batching cannot serve a 'moe' layer \(config.layer_types\)",
    ),
    "no_kv": (
        lambda: build_model(ARCHS["llama"], {0: {"skip": ["attention"]}, 1: {"skip": ["attention"]}}, 2),
        r"No layer holds a KV cache",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unservable_models_are_refused_by_layer_never_empty(name):
    make_model, message = REFUSED[name]
    model = make_model().eval()
    implementation = model.config._attn_implementation
    with pytest.raises(UnservableLayerError, match=message):
        model.generate_batch([[1, 2, 3]], greedy_config(), cb_config(), warmup=False)
    assert model.config._attn_implementation == implementation  # the manager's switch is undone


def test_tensor_parallel_needs_kv_heads_divisible_per_layer():
    per_layer = {1: {"num_key_value_heads": 1}, 2: {"num_attention_heads": 8, "num_key_value_heads": 4}}
    config = build_model(ARCHS["llama"], per_layer, 3).config
    with pytest.raises(UnservableLayerError, match=r"Layer 1: `num_key_value_heads`=1 is not divisible by .* 2"):
        plan_serving(config, tp_size=2, kv_heads_sharded=True)
    plan = plan_serving(config, tp_size=2, kv_heads_sharded=False)  # replicated KV: every rank holds all heads
    assert [layer.num_key_value_heads for layer in plan.layers] == [2, 1, 4]
    per_layer[1]["num_key_value_heads"] = 2
    config = build_model(ARCHS["llama"], per_layer, 3).config
    plan = plan_serving(config, tp_size=2, kv_heads_sharded=True)
    assert [layer.num_key_value_heads for layer in plan.layers] == [1, 1, 2]


def test_homogeneous_look_ups_answer_as_upstream():
    """Outside a per-layer cache's construction, the patched names of upstream's `cache.py` give upstream's answers."""
    from transformers.generation.continuous_batching import cache

    assert cache.ATTN_TYPE_TO_ALLOCATOR["sliding_attention"] is cache_allocators.SlidingAttentionCacheAllocator
    assert cache.ATTN_TYPE_TO_ALLOCATOR["full_attention"] is cache_allocators.FullAttentionCacheAllocator
    with pytest.raises(KeyError):
        cache.ATTN_TYPE_TO_ALLOCATOR["sliding_attention_6"]
    config = build_model(ARCHS["mistral"], None, 3, sliding_window=WINDOW).config
    assert cache.group_layers_by_attn_type(config) == {"sliding_attention": [0, 1, 2]}


@pytest.mark.overlay_only
def test_deactivate_restores_upstreams_continuous_batching():
    from transformers import heterogeneity
    from transformers.generation.continuous_batching import cache, continuous_api, input_outputs

    patched = {
        (continuous_api, "PagedAttentionCache"),
        (continuous_api, "ContinuousBatchingIOs"),
        (input_outputs, "ContinuousBatchingIOs"),
        (cache, "group_layers_by_attn_type"),
        (cache, "PagedAttentionMemoryHandler"),
    }
    originals = {(module, name): getattr(module, name).__wrapped__ for module, name in patched}
    assert type(cache.ATTN_TYPE_TO_ALLOCATOR) is not dict
    try:
        heterogeneity.deactivate()
        for (module, name), original in originals.items():
            assert getattr(module, name) is original, name
        assert type(cache.ATTN_TYPE_TO_ALLOCATOR) is dict
        assert ContinuousBatchingManager.__init__.__qualname__ == "ContinuousBatchingManager.__init__"
        assert not hasattr(ContinuousBatchingManager.__init__, "__wrapped__")
        assert not hasattr(continuous_api.ContinuousBatchProcessor.__init__, "__wrapped__")
    finally:
        heterogeneity.activate()
    assert continuous_api.PagedAttentionCache.__wrapped__ is PagedAttentionCache
