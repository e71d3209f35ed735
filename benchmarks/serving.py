"""Item 6: continuous batching (`generate_batch`, `transformers serve`) of heterogeneous models against their homogeneous
parents.

- Throughput: a fixed number of requests submitted at once to a running `ContinuousBatchingManager` (prompts of
  different lengths, greedy), measured in interleaved rounds: on a CPU the process's CPU time (which other tenants of
  a shared machine do not stretch, as they stretch wall-clock time), on a GPU wall-clock time. The time ratio
  heterogeneous / parent is compared with the ratio predicted by the FLOPs of the whole workload (every prefill and
  every decode step, `common.forward_flops`); measured / predicted above 1 means the heterogeneous model is slower than
  the work it does justifies. The heterogeneous model is the parent with a Nemotron-NAS-style mix (narrower FFNs, fewer
  KV heads, attention and MLPs skipped in some layers; `common.nemotron_nas_style`) on the parent's weights, at two
  sizes: hidden 512, where a CPU step is a few milliseconds of model and the fixed work of continuous batching shows,
  and hidden 2048, where the model dominates a step.
- Profile: where the generation thread spends its CPU time at each size (cProfile, `step_profile`): the matrix
  products the FLOP prediction counts, and what it does not count and does not shrink as they do (the attention
  kernel over the packed batch, norms, rotary, KV repeats, KV-cache reads and writes, upstream's scheduling), with
  what this package adds (the per-layer cache's reads and writes, the per-group masks) on its own.
- Overhead: the parent's own pages served through the per-layer cache (a config made heterogeneous by one slightly
  narrower FFN) against the parent through upstream's cache: what per-layer paging itself costs.
- Capacity: models get the same KV budget in bytes; the number of sequences of a given length that their paged caches
  admit at once (upstream's own admission count, `PagedAttentionCache.count_storable_requests`) must equal the
  arithmetic written here from each layer's config: layers grouped by window (full attention is one more group), a
  group's block is `page_size` tokens of each of its layers, a sector is the least common multiple of the blocks and
  128 bytes, a sequence of `n` tokens takes `ceil(min(n, window) / page_size)` blocks of each group, and sequences are
  admitted while the groups' sectors fit. Measured for the Nemotron-NAS-style pair, and for a model with several
  windows (full attention, 128 and 512 tokens, fewer KV heads in some layers) against its full-attention parent.
"""

from __future__ import annotations

import cProfile
import inspect
import math
import pstats
import time
from typing import Any

import torch

from transformers import ContinuousBatchingConfig, GenerationConfig, MistralConfig, PreTrainedConfig
from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager
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


def configs(quick: bool, large: bool) -> dict[str, PreTrainedConfig]:
    """The parent, its Nemotron-NAS-style child, and (small size) the parent's pages through the per-layer cache."""
    if large:
        sizes = {"hidden_size": 2048, "num_layers": 4, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 5632}
        if quick:
            sizes = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 704}
    elif quick:
        sizes = {"hidden_size": 128, "num_layers": 6, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 512}
    else:
        sizes = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "num_kv_heads": 8, "intermediate_size": 2048}
    parent = llama_config(**sizes, vocab_size=4000)
    cases = {
        "parent": parent,
        "heterogeneous": llama_config(**sizes, vocab_size=4000, per_layer_config=nemotron_nas_style(parent)),
    }
    if not large:
        # One FFN 64 narrower makes the config heterogeneous: the parent's pages through the per-layer cache.
        same_pages = {0: {"intermediate_size": sizes["intermediate_size"] - 64}}
        cases["same pages"] = llama_config(**sizes, vocab_size=4000, per_layer_config=same_pages)
    return cases


def windowed_configs(quick: bool) -> dict[str, PreTrainedConfig]:
    """A full-attention parent, and a child (gpt-oss-puzzle-like) whose layers keep full attention (0, 4), a window of
    512 (2, 6) or 128 tokens (the others, the global window), with fewer KV heads in layers 1 and 5."""
    sizes = {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8}
    sizes.update(head_dim=16 if quick else 64, intermediate_size=1024, vocab_size=4000)
    per_layer = {0: {"sliding_window": None}, 4: {"sliding_window": None}, 2: {"sliding_window": 512}}
    per_layer.update({6: {"sliding_window": 512}, 1: {"num_key_value_heads": 2}, 5: {"num_key_value_heads": 4}})
    return {
        "full-attention parent": MistralConfig(**sizes, sliding_window=None),
        "several windows": MistralConfig(**sizes, sliding_window=128, per_layer_config=per_layer),
    }


def workload(quick: bool, vocab_size: int, large: bool) -> tuple[list[list[int]], int]:
    """Prompts of different lengths (one batch of requests in flight at once) and the tokens generated for each."""
    num_requests, new_tokens = (8, 8) if quick else (16, 12 if large else 24)
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


def serve(
    model, prompts: list[list[int]], new_tokens: int, cb_config: ContinuousBatchingConfig
) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds from submitting every request to a running `ContinuousBatchingManager` (what
    `generate_batch` and `transformers serve` drive) to the last result; checks that each request got all its tokens.
    Starting and stopping the manager are left out: `stop` runs `gc.collect()`, seconds that depend on the Python
    heap, not on the model."""
    generation_config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
    manager = model.init_continuous_batching(generation_config, cb_config)
    manager.start()
    try:
        manager.add_request(prompts[0], request_id="warmup", max_new_tokens=2)
        manager.get_result(request_id="warmup", timeout=600)
        start, start_cpu = time.perf_counter(), time.process_time()
        for i, prompt in enumerate(prompts):
            manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=new_tokens)
        lengths = []
        while len(lengths) < len(prompts):
            output = manager.get_result(timeout=600)
            if output is None:
                raise RuntimeError("the continuous batching manager stopped before serving every request")
            lengths.append(len(output.generated_tokens))
        elapsed = (time.perf_counter() - start, time.process_time() - start_cpu)
    finally:
        manager.stop(block=True, timeout=600)
    if sorted(lengths) != [new_tokens] * len(prompts):
        raise RuntimeError(f"requests got {sorted(lengths)} tokens, expected {new_tokens} each")
    return elapsed


def throughput(ctx: Context, large: bool) -> tuple[list[Check], dict[str, Any]]:
    """Interleaved rounds of `serve` for the pair (and, small size, the same-pages case) of one size."""
    cases = configs(ctx.quick, large)
    parent = build_model(cases["parent"], ctx.dtype, ctx.device)
    models = {"parent": parent}
    models.update({name: build_sharing_weights(cases[name], parent) for name in cases if name != "parent"})
    prompts, new_tokens = workload(ctx.quick, cases["parent"].vocab_size, large)
    cb_config = ContinuousBatchingConfig(
        page_size=PAGE_SIZE, num_blocks=4 * len(prompts), max_batch_tokens=512, use_cuda_graph=False
    )
    element_size = torch.empty((), dtype=ctx.dtype).element_size()
    rounds = 2 if ctx.quick or large else 3
    hidden = cases["parent"].hidden_size
    ctx.log(f"serving: hidden {hidden}, {len(prompts)} requests x {new_tokens} tokens, {rounds} rounds")
    measured = interleave(
        {name: lambda m=m: serve(m, prompts, new_tokens, cb_config) for name, m in models.items()}, rounds
    )
    # On a CPU the work is the process's CPU time: on a shared machine other tenants stretch wall-clock time (by 2x
    # between rounds under a load of 8 on 2 cores) but not the CPU time a step takes. On a GPU, wall-clock time.
    measure = "CPU" if ctx.device.type == "cpu" else "wall-clock"
    times = {
        name: [wall_cpu[1 if measure == "CPU" else 0] for wall_cpu in values] for name, values in measured.items()
    }
    wall = {name: [wall_cpu[0] for wall_cpu in values] for name, values in measured.items()}
    costs = {name: workload_cost(cases[name], prompts, new_tokens, element_size) for name in cases}
    predicted_flops = costs["heterogeneous"][0] / costs["parent"][0]
    predicted_bytes = costs["heterogeneous"][1] / costs["parent"][1]
    time_ratios = paired_ratios(times["heterogeneous"], times["parent"])
    generated = len(prompts) * new_tokens
    tokens_per_s = {name: Stats.of([generated / t for t in values]) for name, values in wall.items()}
    checks = [
        Check.at_most(
            "6",
            f"continuous batching {measure} time, heterogeneous / parent, measured / FLOP-predicted, hidden {hidden}",
            TARGET,
            Stats.of([ratio / predicted_flops for ratio in time_ratios]),
            f"predicted {predicted_flops:.3f} (FLOPs), {predicted_bytes:.3f} (bytes); {len(prompts)} requests at once",
        ),
        Check.info(
            "6",
            f"continuous batching tokens per {measure} second, heterogeneous / parent, hidden {hidden}",
            Stats.of([1 / r for r in time_ratios]),
            f"{1 / predicted_flops:.2f} predicted; wall-clock: {Stats.of(paired_ratios(wall['parent'], wall['heterogeneous'])).median:.2f}, "
            f"tokens/s parent {tokens_per_s['parent'].median:.0f}, heterogeneous {tokens_per_s['heterogeneous'].median:.0f}",
        ),
    ]
    if "same pages" in cases:
        same_pages_predicted = costs["same pages"][0] / costs["parent"][0]
        checks.append(
            Check.at_most(
                "6",
                f"continuous batching {measure} time, parent's pages through the per-layer cache / parent, measured / "
                "predicted",
                TARGET,
                Stats.of(paired_ratios(times["same pages"], times["parent"], same_pages_predicted)),
                f"one FFN 64 narrower (predicted {same_pages_predicted:.4f}): the cost of per-layer paging itself",
            )
        )
    details = {
        "num_requests": len(prompts),
        "prompt_lengths": [len(prompt) for prompt in prompts],
        "new_tokens": new_tokens,
        "seconds (wall-clock, CPU)": measured,
        "predicted_time_ratio_flops": predicted_flops,
        "predicted_time_ratio_bytes": predicted_bytes,
        "per_layer_config": {str(k): v for k, v in cases["heterogeneous"].to_dict()["per_layer_config"].items()},
    }
    details["profile"] = {
        name: step_profile(models[name], prompts, new_tokens, cb_config) for name in ("parent", "heterogeneous")
    }
    for category, share in details["profile"]["heterogeneous"].items():
        if category != "working CPU seconds (profiled)":
            checks.append(
                Check.info(
                    "6",
                    f"share of a continuous-batching step, heterogeneous, hidden {hidden}: {category}",
                    Stats.of([share]),
                    f"parent: {details['profile']['parent'][category]:.3f}",
                )
            )
    return checks, details


# The tensor kernels a profile counts on their own (cProfile names built-in functions this way).
LINEAR_KERNEL = ("~", 0, "<built-in method torch._C._nn.linear>")
ATTENTION_KERNEL = ("~", 0, "<built-in method torch._C._nn.scaled_dot_product_attention>")


def step_profile(model, prompts: list[list[int]], new_tokens: int, cb_config: ContinuousBatchingConfig) -> dict:
    """Where the generation thread's CPU time goes for one `serve` of `model` (cProfile with a CPU-time clock; its own
    cost falls on Python code, so the shares of Python work are upper bounds). The working time is the steps, the batch
    preparations and the updates after them (not the waits for requests), split into: the matrix products (what the
    FLOP prediction counts), the attention kernel (upstream's eager / SDPA paths attend over the whole batch as one
    sequence with a block-diagonal mask), the rest of the forward (norms, rotary, the KV heads repeated for grouped
    attention, activations), the KV-cache reads and writes (this package's per-layer pages, or upstream's), the
    per-group masks this package builds, and upstream's scheduling, batch preparation, sampling and request updates."""
    from transformers.generation.continuous_batching import input_outputs
    from transformers.generation.continuous_batching.cache_allocators import (
        FullAttentionCacheAllocator,
        SlidingAttentionCacheAllocator,
    )
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchProcessor
    from transformers.heterogeneity.continuous_batching_pages import PageGroupsIOs, _PerLayerPagesMixin

    original_loop = ContinuousBatchingManager._run_generation_loop
    profiles = []

    def profiled_loop(manager) -> None:
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        try:
            original_loop(manager)
        finally:
            profile.disable()
            profiles.append(profile)

    ContinuousBatchingManager._run_generation_loop = profiled_loop
    try:
        serve(model, prompts, new_tokens, cb_config)
    finally:
        ContinuousBatchingManager._run_generation_loop = original_loop
    stats = pstats.Stats(profiles[-1]).stats  # (file, line, name) -> (calls, primitive calls, own, cumulative, ...)

    def seconds(*functions: Any) -> float:
        codes = [inspect.unwrap(function).__code__ for function in functions]
        return sum(stats.get((c.co_filename, c.co_firstlineno, c.co_name), (0, 0, 0, 0.0))[3] for c in codes)

    working = sum(
        seconds(method)
        for method in (
            ContinuousBatchProcessor._generation_step,
            ContinuousBatchProcessor.prepare_next_batch,
            ContinuousBatchProcessor.update_batch,
        )
    )
    forward = seconds(type(model).forward)
    linear, attention = (stats.get(kernel, (0, 0, 0.0))[2] for kernel in (LINEAR_KERNEL, ATTENTION_KERNEL))
    cache = seconds(
        _PerLayerPagesMixin.update, FullAttentionCacheAllocator.update, SlidingAttentionCacheAllocator.update
    )
    masks = seconds(PageGroupsIOs.prepare_batch_tensors)
    if masks:  # what it adds to upstream's preparation, which it calls
        masks -= seconds(inspect.unwrap(input_outputs.ContinuousBatchingIOs).prepare_batch_tensors)
    parts = {
        "matrix products (what the FLOP prediction counts)": linear,
        "attention kernel over the packed batch": attention,
        "rest of the forward: norms, rotary, grouped-attention KV repeats, activations": forward
        - linear
        - attention
        - cache,
        "KV-cache reads and writes (per-layer pages of this package; the parent: upstream's)": cache,
        "per-group masks (this package)": masks,
        "scheduling, batch preparation, sampling, request updates (upstream)": working - forward - masks,
    }
    return {**{name: value / working for name, value in parts.items()}, "working CPU seconds (profiled)": working}


def page_bytes(config: PreTrainedConfig, element_size: int) -> list[tuple[int | None, int]]:
    """(window, bytes of one page) of every layer with attention: from the config alone."""
    return [
        (s.window, PAGE_SIZE * 2 * s.num_kv_heads * s.head_dim * element_size)
        for s in layer_shapes(config)
        if s.attention
    ]


def group_blocks(config: PreTrainedConfig, length: int, element_size: int) -> dict[int | None, tuple[int, int]]:
    """Per window (`None`: full attention): (bytes of the group's block, blocks a sequence of `length` tokens takes)."""
    block_bytes: dict[int | None, int] = {}
    for window, size in page_bytes(config, element_size):
        block_bytes[window] = block_bytes.get(window, 0) + size
    return {w: (size, -(-min(length, w or length) // PAGE_SIZE)) for w, size in block_bytes.items()}


def admitted_by_arithmetic(config: PreTrainedConfig, cache_bytes: int, length: int, element_size: int) -> int:
    """Sequences of `length` tokens that a paged cache of `cache_bytes` admits at once, by the arithmetic of the module
    docstring."""
    groups = group_blocks(config, length, element_size)
    sector = math.lcm(*(size for size, _ in groups.values()), 128)
    sectors = cache_bytes // sector
    blocks = {window: size for window, (size, _) in groups.items()}
    needed = {window: count for window, (_, count) in groups.items()}
    per_sector = {window: sector // block for window, block in blocks.items()}
    admitted = 0
    while sum(-(-(admitted + 1) * needed[w] // per_sector[w]) for w in blocks) <= sectors:
        admitted += 1
    return admitted


def capacity(config: PreTrainedConfig, budget: int, length: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(sequences the paged cache admits, sequences the arithmetic allows, cache bytes) for a `budget`-byte cache."""
    element_size = torch.empty((), dtype=dtype).element_size()
    model_block = sum(size for _, size in page_bytes(config, element_size))
    cb_config = ContinuousBatchingConfig(
        page_size=PAGE_SIZE, num_blocks=budget // model_block, max_batch_tokens=256, max_memory_percent=0.9
    )
    cb_config.max_blocks_per_request = 0
    cache = make_paged_attention_cache(
        config, cb_config, torch.device("cpu"), DistributedHelper(None, None), dtype=dtype
    )
    needed = [{name: a.needs_new_blocks("probe", 0, length) for name, a in cache.cache_allocators.items()}]
    admitted = cache.count_storable_requests(needed * (10 * budget // (model_block * -(-length // PAGE_SIZE)) + 10))
    cache_bytes = cache.num_sectors * cache.bytes_per_sector
    return admitted, admitted_by_arithmetic(config, cache_bytes, length, element_size), cache_bytes


def capacity_checks(ctx: Context) -> tuple[list[Check], dict[str, Any]]:
    budget = (16 if ctx.quick else 256) * 2**20
    length = 1024
    element_size = torch.empty((), dtype=ctx.dtype).element_size()
    checks, details = [], {}
    for pair in (configs(ctx.quick, large=False), windowed_configs(ctx.quick)):
        names = [name for name in pair if name != "same pages"]
        results = {name: capacity(pair[name], budget, length, ctx.dtype) for name in names}
        for name, (admitted, expected, cache_bytes) in results.items():
            if expected == 0:
                raise ValueError(f"{name}: a {budget}-byte KV budget holds no sequence of {length} tokens")
            checks.append(
                Check.equals_one(
                    "6",
                    f"concurrent sequences in a {budget // 2**20} MiB KV budget, {name}: admitted / per-group arithmetic",
                    Stats.of([admitted / expected]),
                    f"{admitted} sequences of {length} tokens ({cache_bytes} cache bytes)",
                )
            )
        child, parent = names[1], names[0]
        held = {
            name: sum(size * count for size, count in group_blocks(pair[name], length, element_size).values())
            for name in names
        }
        checks.append(
            Check.info(
                "6",
                f"concurrent sequences in the same KV budget, {child} / {parent}",
                Stats.of([results[child][0] / results[parent][0]]),
                f"KV bytes one sequence of {length} tokens holds: {parent} {held[parent]}, {child} {held[child]}",
            )
        )
        details.update(
            {name: dict(zip(("admitted", "expected", "cache_bytes"), values)) for name, values in results.items()}
        )
    return checks, {"budget_bytes": budget, "length": length, **details}


@torch.inference_mode()
def run(ctx: Context) -> BenchResult:
    checks, details = [], {}
    for large in (False, True):
        size_checks, details["large" if large else "small"] = throughput(ctx, large)
        checks.extend(size_checks)
    ctx.log("serving: capacity in a fixed KV budget")
    capacity_rows, details["capacity"] = capacity_checks(ctx)
    checks.extend(capacity_rows)
    return BenchResult(checks, details)
