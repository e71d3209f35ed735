"""Item 5: `torch.compile` decodes a heterogeneous model as fast as a homogeneous one of the same FLOPs.

The heterogeneous model varies FFN width, KV heads and head_dim over five layers so that the sums match the
homogeneous model exactly: the same FLOPs per token, the same weight bytes, the same KV bytes (asserted through the
cost model). Both decode with a `StaticCache` (fixed shapes, the setting `torch.compile` is meant for) through
`torch.compile(model.forward)`; eager decoding of both is timed in the same rounds, to separate what compilation
changes from what the models themselves cost.

`fullgraph=True` is tried first; when the heterogeneous model cannot be traced as one graph the error is recorded
and the model is compiled with graph breaks (the default), which is what a user gets.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch._dynamo.utils import counters

from transformers import PreTrainedConfig, PreTrainedModel, StaticCache

from .common import (
    BenchResult,
    Check,
    Context,
    Decoder,
    Stats,
    build_model,
    decode_bytes,
    forward_flops,
    interleave,
    llama_config,
    paired_ratios,
    random_tokens,
)


TARGET = 1.05


def configs(quick: bool) -> tuple[PreTrainedConfig, PreTrainedConfig]:
    """(homogeneous, heterogeneous of the same FLOPs, weight bytes and KV bytes)."""
    if quick:
        sizes = {"hidden_size": 256, "num_layers": 5, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512}
        sizes["vocab_size"] = 1000
    else:
        sizes = {"hidden_size": 1024, "num_layers": 8, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 4096}
    kv, width = sizes["num_kv_heads"], sizes["intermediate_size"]
    head_dim = sizes["hidden_size"] // sizes["num_heads"]
    # Pairs that cancel: FFN 3/4 + 5/4; KV heads 1/2 + 1/2 + 2; head_dim 3/2 + 1/2 (queries and KV alike).
    per_layer = {
        0: {"intermediate_size": width * 3 // 4, "num_key_value_heads": kv // 2},
        1: {"intermediate_size": width * 5 // 4, "num_key_value_heads": kv // 2},
        2: {"num_key_value_heads": 2 * kv},
        3: {"head_dim": head_dim * 3 // 2},
        4: {"head_dim": head_dim // 2},
    }
    return llama_config(**sizes), llama_config(**sizes, per_layer_config=per_layer)


def run(ctx: Context) -> BenchResult:
    homogeneous, heterogeneous = configs(ctx.quick)
    prompt_length, decode_steps, warmup = (16, 4, 1) if ctx.quick else (32, 120, 2)
    max_cache_len = prompt_length + warmup + decode_steps
    element_size = torch.empty((), dtype=ctx.dtype).element_size()
    for cost in (lambda c: forward_flops(c, 1, prompt_length), lambda c: decode_bytes(c, prompt_length, element_size)):
        if cost(homogeneous) != cost(heterogeneous):
            raise AssertionError("the compile pair must have the same FLOPs and bytes per token")

    models = {
        "homogeneous": build_model(homogeneous, ctx.dtype, ctx.device, seed=0),
        "heterogeneous": build_model(heterogeneous, ctx.dtype, ctx.device, seed=1),
    }
    input_ids = random_tokens(1, prompt_length, homogeneous.vocab_size, ctx.device)
    details: dict[str, Any] = {"prompt_length": prompt_length, "decode_steps": decode_steps}
    decoders: dict[str, Decoder] = {}
    for name, model in models.items():
        ctx.log(f"compile: compiling the {name} model")
        decoders[f"{name} compiled"], details[name] = _compile(model, ctx, input_ids, max_cache_len)
        decoders[f"{name} eager"] = Decoder(model, input_ids, ctx.device, _static_cache(model, max_cache_len))
    for decoder in decoders.values():
        decoder.prefill()

    ctx.log(f"compile: timing decode, {decode_steps} steps of each model, taking turns")
    times = interleave({name: decoder.step for name, decoder in decoders.items()}, rounds=decode_steps, warmup=warmup)
    details["decode_step_s"] = {name: Stats.of(values).__dict__ for name, values in times.items()}
    details["graphs_after_timing"] = int(counters["stats"]["unique_graphs"])
    checks = []
    for mode, kind in (("compiled", "max"), ("eager", "info")):
        ratios = paired_ratios(times[f"heterogeneous {mode}"], times[f"homogeneous {mode}"])
        stock = Stats.of(times[f"homogeneous {mode}"]).median
        detail = f"stock {1 / stock:.1f} tokens/s"
        if mode == "compiled":
            detail += (
                f"; graphs: heterogeneous {details['heterogeneous']['graphs']}, "
                f"homogeneous {details['homogeneous']['graphs']}"
            )
        checks.append(
            Check.at_most(
                "5",
                f"decode time per token ({mode}), heterogeneous / stock",
                TARGET if kind == "max" else None,
                Stats.of(ratios),
                detail,
            )
        )
    compile_ratio = details["heterogeneous"]["compile_s"] / details["homogeneous"]["compile_s"]
    checks.append(
        Check.info(
            "5",
            "compile time (first decode step), heterogeneous / stock",
            Stats.of([compile_ratio]),
            f"stock {details['homogeneous']['compile_s']:.0f} s",
        )
    )
    del models, decoders
    gc.collect()
    torch._dynamo.reset()
    return BenchResult(checks, details)


def _static_cache(model: PreTrainedModel, max_cache_len: int) -> StaticCache:
    return StaticCache(config=model.config, max_cache_len=max_cache_len)


def _compile(
    model: PreTrainedModel, ctx: Context, input_ids: torch.Tensor, max_cache_len: int
) -> tuple[Decoder, dict[str, Any]]:
    """Compiles `model.forward` for decode steps; returns a decoder through it (the one that compiled it, so that
    the same cache object is used throughout) and what compilation did (time, graph count, breaks)."""
    info: dict[str, Any] = {}
    counters_before = int(counters["stats"]["unique_graphs"])
    for fullgraph in (True, False):
        counters["graph_break"].clear()
        compiled = torch.compile(model.forward, fullgraph=fullgraph, dynamic=False)
        decoder = Decoder(model, input_ids, ctx.device, _static_cache(model, max_cache_len), forward=compiled)
        decoder.prefill()
        try:
            info["compile_s"] = decoder.step()  # the first step traces and compiles
        except Exception as error:  # dynamo raises many types; any failure of fullgraph means graph breaks
            if not fullgraph:
                raise
            info["fullgraph_error"] = str(error).strip().splitlines()[0] + " | " + _explanation(error)
            ctx.log(f"compile: fullgraph=True failed ({info['fullgraph_error'][:150]}); compiling with graph breaks")
            continue
        info["fullgraph"] = fullgraph
        info["graphs"] = int(counters["stats"]["unique_graphs"]) - counters_before
        info["graph_breaks"] = {reason[:200]: count for reason, count in counters["graph_break"].items()}
        return decoder, info
    raise AssertionError("unreachable")


def _explanation(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in lines if line.startswith("Explanation:")), "")
