"""Item 3: the KV cache of a heterogeneous model holds exactly what its layers need.

A Mistral-architecture model whose layers differ in KV heads, head_dim and sliding window (full attention on some
layers, windows of 16 to 64 tokens on others), with some attention skipped, runs a prompt and decode steps with a
`DynamicCache` and with a `StaticCache`. The bytes the caches hold (every distinct tensor storage reachable from
their layers) are compared with the theoretical minimum, computed here from each layer's config and nothing else:
`batch * tokens * 2 * kv_heads * head_dim * element_size` per layer with attention. `tokens` is what the layer must
keep: the tokens seen (DynamicCache) or `max_cache_len` (StaticCache allocates it up front); a windowed layer keeps at
most `window - 1` past tokens (DynamicCache), or `window` slots (StaticCache writes the incoming token beside them).
The package's own accounting helper `kv_cache_bytes` is checked against the same minimum.
"""

from __future__ import annotations

from typing import Any

import torch

from transformers import DynamicCache, MistralConfig, PreTrainedConfig, StaticCache
from transformers.heterogeneity import kv_cache_bytes

from .common import BenchResult, Check, Context, Stats, build_model, layer_shapes, random_tokens


KV_ATTRIBUTES = ("keys", "values")


GLOBAL_WINDOW = 64


def mistral_config(per_layer_config: dict[int, dict[str, Any]] | None = None) -> PreTrainedConfig:
    return MistralConfig(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        intermediate_size=1024,
        vocab_size=1000,
        sliding_window=GLOBAL_WINDOW,
        per_layer_config=per_layer_config,
    )


def heterogeneous_config() -> PreTrainedConfig:
    """KV heads from 1 to 8, head_dim from 32 to 128, windows None (full), 16, 32 and 64, two layers without
    attention."""
    return mistral_config(
        {
            0: {"sliding_window": None},
            1: {"num_key_value_heads": 2, "sliding_window": 16},
            2: {"num_key_value_heads": 1},
            3: {"skip": ["attention"]},
            4: {"head_dim": 32, "sliding_window": None},
            5: {"head_dim": 128, "num_key_value_heads": 2, "sliding_window": 32},
            6: {"skip": ["attention", "mlp"]},
            7: {"num_key_value_heads": 8, "sliding_window": None},
        }
    )


def theoretical_bytes(
    config: PreTrainedConfig, tokens: int, batch: int, element_size: int, static: bool = False
) -> list[int]:
    """Per-layer minimum: keys and values of every token a layer must keep, in each layer that has attention; 0
    elsewhere. `tokens` is the tokens seen, or `max_cache_len` for a static cache."""
    sizes = []
    for shape in layer_shapes(config):
        kept = tokens if shape.window is None else min(tokens, shape.window if static else shape.window - 1)
        sizes.append(batch * kept * 2 * shape.num_kv_heads * shape.head_dim * element_size if shape.attention else 0)
    return sizes


def held_bytes(cache: Any) -> tuple[list[int], list[int], int]:
    """(per-layer bytes of the KV tensors, per-layer bytes of their storages, bytes of every other tensor the cache
    holds). Storages are counted once at their full allocated size, so views, over-allocation and duplicates show."""
    seen: set[int] = set()
    tensors, storages = [], []
    bookkeeping = 0
    for layer in cache.layers:
        kv_tensors = kv_storages = 0
        for name, value in vars(layer).items():
            if not isinstance(value, torch.Tensor):
                continue
            if name in KV_ATTRIBUTES:
                kv_tensors += value.numel() * value.element_size()
            storage = value.untyped_storage()
            if storage.data_ptr() in seen and storage.nbytes():
                continue
            seen.add(storage.data_ptr())
            if name in KV_ATTRIBUTES:
                kv_storages += storage.nbytes()
            else:
                bookkeeping += storage.nbytes()
        tensors.append(kv_tensors)
        storages.append(kv_storages)
    return tensors, storages, bookkeeping


@torch.inference_mode()
def run(ctx: Context) -> BenchResult:
    config = heterogeneous_config()
    batch, prompt_length, decode_steps, max_cache_len = 2, 100, 28, 256
    model = build_model(config, ctx.dtype, ctx.device)
    element_size = torch.empty((), dtype=ctx.dtype).element_size()
    input_ids = random_tokens(batch, prompt_length, config.vocab_size, ctx.device)
    checkpoints = {prompt_length, prompt_length + 1, prompt_length + decode_steps // 2, prompt_length + decode_steps}

    ctx.log("kv memory: DynamicCache and StaticCache")
    samples: dict[str, list[dict[str, Any]]] = {"DynamicCache": [], "StaticCache": []}
    for cache_name, cache in (
        ("DynamicCache", DynamicCache(config=config)),
        ("StaticCache", StaticCache(config=config, max_cache_len=max_cache_len)),
    ):
        tokens = input_ids
        seen_tokens = 0
        for _ in range(decode_steps + 1):
            output = model(tokens, past_key_values=cache, use_cache=True)
            seen_tokens += tokens.shape[1]
            tokens = output.logits[:, -1:].argmax(-1)
            if seen_tokens in checkpoints:
                per_layer, storages, bookkeeping = held_bytes(cache)
                static = cache_name == "StaticCache"
                minimum = theoretical_bytes(
                    config, max_cache_len if static else seen_tokens, batch, element_size, static
                )
                samples[cache_name].append(
                    {
                        "tokens_seen": seen_tokens,
                        "held_bytes": sum(per_layer),
                        "storage_bytes": sum(storages),
                        "theoretical_bytes": sum(minimum),
                        "bookkeeping_bytes": bookkeeping,
                        "held_per_layer": per_layer,
                        "theoretical_per_layer": minimum,
                    }
                )

    # The package's accounting helper against the same independent minimum.
    helper_ratios = []
    for tokens in sorted(checkpoints):
        helper = sum(size.bytes_for(tokens, batch) for size in kv_cache_bytes(config, dtype=ctx.dtype))
        helper_ratios.append(helper / sum(theoretical_bytes(config, tokens, batch, element_size)))

    # What a homogeneous model of the same global sizes would hold, for scale.
    stock_bytes = sum(theoretical_bytes(mistral_config(), 128, batch, element_size))
    hetero_bytes = sum(theoretical_bytes(config, 128, batch, element_size))

    checks = [
        _equal_check(
            "DynamicCache bytes / theoretical minimum (tokens seen)",
            samples["DynamicCache"],
            f"{len(checkpoints)} points, {prompt_length}..{prompt_length + decode_steps} tokens, batch {batch}",
        ),
        _equal_check(
            f"StaticCache bytes / theoretical minimum (max_cache_len={max_cache_len})",
            samples["StaticCache"],
            f"bookkeeping tensors: {samples['StaticCache'][-1]['bookkeeping_bytes']} bytes (not KV)",
        ),
        Check.equals_one(
            "3", "kv_cache_bytes() / theoretical minimum", Stats.of(helper_ratios), "the package's accounting helper"
        ),
        Check.info(
            "3",
            "DynamicCache storages / theoretical minimum",
            Stats.of([sample["storage_bytes"] / sample["theoretical_bytes"] for sample in samples["DynamicCache"]]),
            "upstream: a sliding layer keeps a view of its last concatenation (+1 token; the prompt after prefill)",
        ),
    ]
    details = {
        "config_per_layer": {str(k): v for k, v in config.to_dict()["per_layer_config"].items()},
        "batch_size": batch,
        "element_size": element_size,
        "max_cache_len": max_cache_len,
        "samples": samples,
        "homogeneous_same_sizes_bytes_at_128_tokens": stock_bytes,
        "heterogeneous_bytes_at_128_tokens": hetero_bytes,
    }
    return BenchResult(checks, details)


def _equal_check(name: str, samples: list[dict[str, Any]], detail: str) -> Check:
    ratios = [sample["held_bytes"] / sample["theoretical_bytes"] for sample in samples]
    return Check.equals_one("3", name, Stats.of(ratios), detail)
