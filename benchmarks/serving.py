"""Item 6: continuous batching (`generate_batch`) of a heterogeneous model against its homogeneous parent.

The heterogeneous model is the parent with a Nemotron-NAS-style mix (narrower FFNs, fewer KV heads, attention and
MLPs skipped in some layers; `common.nemotron_nas_style`), built on the parent's weights.

- Throughput: a fixed number of requests submitted at once to a running `ContinuousBatchingManager` (prompts of
  different lengths, greedy), tokens per second of each model measured in interleaved rounds. The time ratio heterogeneous / parent is compared with the ratio
  predicted by the FLOPs of the whole workload (every prefill and every decode step, `common.forward_flops`);
  measured / predicted above 1 means the heterogeneous model is slower than the work it does justifies. The
  prediction from bytes read (weights and KV, once per step) is reported beside it.
- Overhead: the parent's own pages served through the per-layer cache (a config made heterogeneous by one slightly
  narrower FFN) against the parent through upstream's cache: what per-layer paging itself costs.
- Capacity: both models get the same KV budget in bytes; the number of sequences of a given length that their paged
  caches admit at once (upstream's own admission count, `PagedAttentionCache.count_storable_requests`) must equal the
  arithmetic written here from each layer's config: a sequence holds `ceil(length / page_size)` pages of
  `page_size * 2 * kv_heads * head_dim * element_size` bytes in every layer with attention, nothing elsewhere.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from transformers import ContinuousBatchingConfig, GenerationConfig, PreTrainedConfig
from transformers.generation.continuous_batching.distributed import DistributedHelper
from transformers.heterogeneity.continuous_batching import make_paged_attention_cache

from .common import (
    BenchResult,
    Check,
    Context,
    Stats,
    build_model,
    build_sharing_weights,
    decode_bytes,
    forward_flops,
    interleave,
    layer_shapes,
    llama_config,
    nemotron_nas_style,
    paired_ratios,
    random_tokens,
)


TARGET = 1.05
PAGE_SIZE = 64


def configs(quick: bool) -> dict[str, PreTrainedConfig]:
    if quick:
        sizes = {"hidden_size": 128, "num_layers": 6, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 512}
    else:
        sizes = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "num_kv_heads": 8, "intermediate_size": 2048}
    parent = llama_config(**sizes, vocab_size=4000)
    # The parent's pages, through the per-layer cache (one FFN 64 narrower makes the config heterogeneous): what the
    # per-layer paging itself costs.
    same_pages = {0: {"intermediate_size": sizes["intermediate_size"] - 64}}
    return {
        "parent": parent,
        "heterogeneous": llama_config(**sizes, vocab_size=4000, per_layer_config=nemotron_nas_style(parent)),
        "same pages": llama_config(**sizes, vocab_size=4000, per_layer_config=same_pages),
    }


def workload(quick: bool, vocab_size: int) -> tuple[list[list[int]], int]:
    """Prompts of different lengths (one batch of requests in flight at once) and the tokens generated for each."""
    num_requests, new_tokens = (8, 8) if quick else (16, 24)
    lengths = [16 + (37 * i) % 64 for i in range(num_requests)]
    prompts = [
        random_tokens(1, length, vocab_size, torch.device("cpu"), seed=i)[0].tolist()
        for i, length in enumerate(lengths)
    ]
    return prompts, new_tokens


def workload_cost(
    config: PreTrainedConfig, prompts: list[list[int]], new_tokens: int, element_size: int
) -> tuple[float, float]:
    """(FLOPs, bytes read) of serving `prompts`: each prefill, then `new_tokens` decode steps of all requests together
    (one read of the weights per step, each request's KV read in every step)."""
    flops = sum(forward_flops(config, len(prompt)) for prompt in prompts)
    flops += sum(forward_flops(config, 1, len(prompt) + step) for prompt in prompts for step in range(new_tokens - 1))
    weights = decode_bytes(config, 0, element_size) - _kv_bytes(config, 1, element_size)
    kv = sum(
        _kv_bytes(config, len(prompt) + step, element_size) for prompt in prompts for step in range(new_tokens - 1)
    )
    return flops, (new_tokens - 1) * weights + kv


def _kv_bytes(config: PreTrainedConfig, tokens: int, element_size: int) -> float:
    return float(
        sum(2 * s.num_kv_heads * s.head_dim * tokens * element_size for s in layer_shapes(config) if s.attention)
    )


def serve(model, prompts: list[list[int]], new_tokens: int, cb_config: ContinuousBatchingConfig) -> float:
    """Seconds from submitting every request to a running `ContinuousBatchingManager` (what `generate_batch` and
    `transformers serve` drive) to the last result; checks that each request got all its tokens. Starting and
    stopping the manager are left out: `stop` runs `gc.collect()`, seconds that depend on the Python heap, not on the
    model."""
    generation_config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
    manager = model.init_continuous_batching(generation_config, cb_config)
    manager.start()
    try:
        manager.add_request(prompts[0], request_id="warmup", max_new_tokens=2)
        manager.get_result(request_id="warmup", timeout=600)
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=new_tokens)
        lengths = []
        while len(lengths) < len(prompts):
            output = manager.get_result(timeout=600)
            if output is None:
                raise RuntimeError("the continuous batching manager stopped before serving every request")
            lengths.append(len(output.generated_tokens))
        elapsed = time.perf_counter() - start
    finally:
        manager.stop(block=True, timeout=600)
    if sorted(lengths) != [new_tokens] * len(prompts):
        raise RuntimeError(f"requests got {sorted(lengths)} tokens, expected {new_tokens} each")
    return elapsed


def page_bytes(config: PreTrainedConfig, element_size: int) -> list[int]:
    """Bytes of one page of every layer with attention (the per-layer arithmetic, from the config alone)."""
    return [PAGE_SIZE * 2 * s.num_kv_heads * s.head_dim * element_size for s in layer_shapes(config) if s.attention]


def capacity(config: PreTrainedConfig, budget: int, length: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(sequences the paged cache admits, sequences the arithmetic allows, cache bytes) for a `budget`-byte cache."""
    element_size = torch.empty((), dtype=dtype).element_size()
    model_block = sum(page_bytes(config, element_size))
    cb_config = ContinuousBatchingConfig(
        page_size=PAGE_SIZE, num_blocks=budget // model_block, max_batch_tokens=256, max_memory_percent=0.9
    )
    cb_config.max_blocks_per_request = 0
    cache = make_paged_attention_cache(
        config, cb_config, torch.device("cpu"), DistributedHelper(None, None), dtype=dtype
    )
    needed = [{name: a.needs_new_blocks("probe", 0, length) for name, a in cache.cache_allocators.items()}]
    admitted = cache.count_storable_requests(needed * (10 * budget // model_block + 10))
    cache_bytes = cache.num_sectors * cache.bytes_per_sector
    expected = cache_bytes // (math.ceil(length / PAGE_SIZE) * model_block)
    return admitted, expected, cache_bytes


@torch.inference_mode()
def run(ctx: Context) -> BenchResult:
    cases = configs(ctx.quick)
    parent = build_model(cases["parent"], ctx.dtype, ctx.device)
    models = {"parent": parent}
    models.update({name: build_sharing_weights(cases[name], parent) for name in cases if name != "parent"})
    prompts, new_tokens = workload(ctx.quick, cases["parent"].vocab_size)
    cb_config = ContinuousBatchingConfig(
        page_size=PAGE_SIZE, num_blocks=4 * len(prompts), max_batch_tokens=512, use_cuda_graph=False
    )
    element_size = torch.empty((), dtype=ctx.dtype).element_size()
    rounds = 2 if ctx.quick else 3
    ctx.log(f"serving: {len(prompts)} requests x {new_tokens} tokens, {rounds} rounds")
    times = interleave(
        {name: lambda m=m: serve(m, prompts, new_tokens, cb_config) for name, m in models.items()}, rounds
    )
    costs = {name: workload_cost(cases[name], prompts, new_tokens, element_size) for name in cases}
    predicted_flops = costs["heterogeneous"][0] / costs["parent"][0]
    predicted_bytes = costs["heterogeneous"][1] / costs["parent"][1]
    time_ratios = paired_ratios(times["heterogeneous"], times["parent"])
    same_pages_predicted = costs["same pages"][0] / costs["parent"][0]
    same_pages_ratios = paired_ratios(times["same pages"], times["parent"], same_pages_predicted)
    generated = len(prompts) * new_tokens
    throughput = {name: Stats.of([generated / t for t in values]) for name, values in times.items()}

    ctx.log("serving: capacity in a fixed KV budget")
    budget = (16 if ctx.quick else 256) * 2**20
    length = 512
    capacities = {name: capacity(config, budget, length, ctx.dtype) for name, config in cases.items()}

    checks = [
        Check.at_most(
            "6",
            "continuous batching time, heterogeneous / parent, measured / FLOP-predicted",
            TARGET,
            Stats.of([ratio / predicted_flops for ratio in time_ratios]),
            f"predicted {predicted_flops:.3f} (FLOPs), {predicted_bytes:.3f} (bytes); {len(prompts)} requests at once, "
            f"tokens/s parent {throughput['parent'].median:.0f}, heterogeneous {throughput['heterogeneous'].median:.0f}",
        ),
        Check.info(
            "6", "continuous batching tokens/s, heterogeneous / parent", Stats.of([1 / r for r in time_ratios])
        ),
        Check.at_most(
            "6",
            "continuous batching time, parent's pages through the per-layer cache / parent, measured / predicted",
            TARGET,
            Stats.of(same_pages_ratios),
            f"one FFN 64 narrower (predicted {same_pages_predicted:.4f}): the cost of per-layer paging itself",
        ),
    ]
    for name, (admitted, expected, cache_bytes) in capacities.items():
        checks.append(
            Check.equals_one(
                "6",
                f"concurrent sequences in a {budget // 2**20} MiB KV budget, {name}: admitted / per-layer arithmetic",
                Stats.of([admitted / expected]),
                f"{admitted} sequences of {length} tokens ({cache_bytes} cache bytes)",
            )
        )
    checks.append(
        Check.info(
            "6",
            "concurrent sequences in the same KV budget, heterogeneous / parent",
            Stats.of([capacities["heterogeneous"][0] / capacities["parent"][0]]),
            f"KV bytes per token: parent {sum(page_bytes(cases['parent'], element_size)) // PAGE_SIZE}, heterogeneous "
            f"{sum(page_bytes(cases['heterogeneous'], element_size)) // PAGE_SIZE}",
        )
    )
    details: dict[str, Any] = {
        "num_requests": len(prompts),
        "prompt_lengths": [len(prompt) for prompt in prompts],
        "new_tokens": new_tokens,
        "seconds": times,
        "predicted_time_ratio_flops": predicted_flops,
        "predicted_time_ratio_bytes": predicted_bytes,
        "capacity": {
            name: dict(zip(("admitted", "expected", "cache_bytes"), values)) for name, values in capacities.items()
        },
        "per_layer_config": {str(k): v for k, v in cases["heterogeneous"].to_dict()["per_layer_config"].items()},
    }
    return BenchResult(checks, details)
