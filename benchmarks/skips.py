"""Item 2: skipped sub-blocks pay off as much as the work they remove.

A 24-layer Llama (hidden 1024, where the layers dominate the cost) is timed in full and with 25 % / 50 % of its
attention sub-blocks skipped, the same for MLPs, and in a Nemotron-NAS-style mix (narrower FFNs, fewer KV heads,
some skips). Each variant's time relative to the full model is compared with the relative cost predicted from its
config: FLOPs for prefill (compute-bound) and bytes read per token for decode (memory-bound on CPU and at batch 1).
Measured / predicted above 1 means the variant is slower than the work it does justifies.

Decode is timed with the default `DynamicCache` (what `generate` uses; judged) and with a `StaticCache` (reported):
the dynamic cache grows by `torch.cat` at every step in every attention layer, a cost that no FLOP or weight-byte
count sees, and the static run shows what decode costs without it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from transformers import PreTrainedConfig, StaticCache

from .common import (
    BenchResult,
    Check,
    Context,
    Decoder,
    Stats,
    build_model,
    build_sharing_weights,
    check_parameter_count,
    decode_bytes,
    every_nth,
    forward_flops,
    interleave,
    layer_shapes,
    llama_config,
    model_parameters,
    nemotron_nas_style,
    paired_ratios,
    random_tokens,
)


TARGET = 1.05
FULL = "full"


def variants(quick: bool) -> dict[str, PreTrainedConfig]:
    """The full model first, then each variant; every variant has the full model's sizes and only per-layer
    changes."""
    if quick:
        sizes = {"hidden_size": 256, "num_layers": 8, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 1024}
        sizes["vocab_size"] = 1000
    else:
        sizes = {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 4096}
    num_layers = sizes["num_layers"]
    base = llama_config(**sizes)
    configs = {FULL: base}
    for name in ("attention", "mlp"):
        for fraction in (0.25, 0.5):
            skipped = every_nth(num_layers, fraction)
            configs[f"{name} {round(fraction * 100)}% skipped"] = llama_config(
                **sizes, per_layer_config={layer_idx: {"skip": [name]} for layer_idx in skipped}
            )
    configs["Nemotron-NAS-style mix"] = llama_config(**sizes, per_layer_config=nemotron_nas_style(base))
    return configs


PHASES = (
    # (key, label, prediction basis, judged against the target?)
    ("prefill", "prefill", "flops", True),
    ("decode", "decode, DynamicCache", "bytes", True),
    ("decode_static", "decode, StaticCache", "bytes_static", False),
)


def run(ctx: Context) -> BenchResult:
    configs = variants(ctx.quick)
    prompt_length, prefill_rounds, decode_steps = (32, 2, 4) if ctx.quick else (128, 24, 60)
    warmup = 1 if ctx.quick else 2
    past_tokens = prompt_length + warmup + decode_steps // 2  # the median decode step's context
    max_cache_len = prompt_length + warmup + decode_steps  # a StaticCache attends over all of it at every step
    element_size = torch.empty((), dtype=ctx.dtype).element_size()

    ctx.log(f"skips: building {len(configs)} models on shared weights")
    full_model = build_model(configs[FULL], ctx.dtype, ctx.device)
    models = {FULL: full_model}
    for name, config in configs.items():
        if name != FULL:
            models[name] = build_sharing_weights(config, full_model)
    for name, model in models.items():
        check_parameter_count(model, configs[name])
    input_ids = random_tokens(1, prompt_length, configs[FULL].vocab_size, ctx.device)

    ctx.log(f"skips: prefill ({prompt_length} tokens), {prefill_rounds} rounds")
    measured = {
        "prefill": interleave(
            {name: Decoder(model, input_ids, ctx.device).prefill for name, model in models.items()},
            rounds=prefill_rounds,
            warmup=warmup,
        )
    }
    for phase, make_cache in (
        ("decode", lambda model: None),
        ("decode_static", lambda model: StaticCache(config=model.config, max_cache_len=max_cache_len)),
    ):
        ctx.log(f"skips: {phase}, {decode_steps} steps of each model, taking turns")
        decoders = {
            name: Decoder(model, input_ids, ctx.device, cache=make_cache(model)) for name, model in models.items()
        }
        for decoder in decoders.values():
            decoder.prefill()
        measured[phase] = interleave(
            {name: decoder.step for name, decoder in decoders.items()}, rounds=decode_steps, warmup=warmup
        )
        del decoders
    del models, full_model
    gc.collect()

    full = configs[FULL]
    costs = {
        "flops": lambda config: forward_flops(config, prompt_length),
        "bytes": lambda config: decode_bytes(config, past_tokens, element_size),
        "bytes_static": lambda config: decode_bytes(config, max_cache_len, element_size),
        "decode_flops": lambda config: forward_flops(config, 1, past_tokens),
    }
    predictions = {
        basis: {name: cost(config) / cost(full) for name, config in configs.items()} for basis, cost in costs.items()
    }
    checks: list[Check] = []
    per_variant: dict[str, Any] = {}
    for name, config in configs.items():
        if name == FULL:
            continue
        row: dict[str, Any] = {
            "parameters": model_parameters(config),
            "per_layer_config": {str(k): v for k, v in config.to_dict().get("per_layer_config", {}).items()},
        }
        for phase, label, basis, judged in PHASES:
            relative = paired_ratios(measured[phase][name], measured[phase][FULL])
            predicted = predictions[basis][name]
            ratio = Stats.of([value / predicted for value in relative])
            row[phase] = {
                "measured_relative_time": Stats.of(relative).__dict__,
                "predicted_relative_time": predicted,
                "prediction_basis": basis,
                "measured_over_predicted": ratio.__dict__,
            }
            checks.append(
                Check.at_most(
                    "2",
                    f"{name}: {label}, measured / predicted ({'FLOPs' if basis == 'flops' else 'bytes'})",
                    TARGET if judged else None,
                    ratio,
                    f"time x{Stats.of(relative).median:.3f} of full, predicted x{predicted:.3f}",
                )
            )
        row["decode"]["predicted_relative_time_flops"] = predictions["decode_flops"][name]
        per_variant[name] = row

    # What the FLOP/byte prediction leaves out: a least-squares fit of the absolute times of all six models to a fixed
    # cost per model, per attention sub-block, per MLP sub-block, plus the FLOPs or bytes.
    fits = {
        phase: _fit_fixed_costs(configs, measured[phase], costs[basis], scale)
        for phase, _, basis, _ in PHASES
        for scale in [1e12 if basis == "flops" else 1e9]
    }
    fit = fits["decode"]
    checks.append(
        Check.info(
            "2",
            "decode, DynamicCache: fit ms = a + b*attention + c*MLP + d*GB (all six models)",
            detail=f"a={fit['fixed_ms']:.1f}, b={fit['per_attention_ms']:.2f}, c={fit['per_mlp_ms']:.2f}, "
            f"d={fit['per_unit_ms']:.1f}; residual <= {fit['max_residual_ms']:.1f} ms of {fit['full_model_ms']:.0f}",
        )
    )

    details = {
        "cost_fits": fits,
        "prompt_length": prompt_length,
        "prefill_rounds": prefill_rounds,
        "decode_steps": decode_steps,
        "static_max_cache_len": max_cache_len,
        "full_model": {
            "parameters": model_parameters(full),
            **{f"{phase}_s": Stats.of(measured[phase][FULL]).__dict__ for phase, *_ in PHASES},
            "prefill_flops": costs["flops"](full),
            "decode_bytes": costs["bytes"](full),
        },
        "variants": per_variant,
    }
    return BenchResult(checks, details)


def _fit_fixed_costs(
    configs: dict[str, PreTrainedConfig],
    times: dict[str, list[float]],
    cost: Callable[[PreTrainedConfig], float],
    scale: float,
) -> dict[str, float]:
    """Least-squares fit of the median time of every model (full model included) to
    `fixed + per_attention * attention sub-blocks + per_mlp * MLP sub-blocks + per_unit * cost / scale`.

    A FLOP or byte count predicts time only where time is proportional to it; the fitted per-sub-block costs show
    how much is not (on CPU: rotary, cache update, attention kernel, norms, dispatch), and so why a prediction from
    FLOPs or bytes alone misses for variants that remove mostly one kind of sub-block.
    """
    rows, observed = [], []
    for name, config in configs.items():
        shapes = layer_shapes(config)
        rows.append([1.0, sum(s.attention for s in shapes), sum(s.mlp for s in shapes), cost(config) / scale])
        observed.append(1000 * Stats.of(times[name]).median)
    matrix, target = np.array(rows), np.array(observed)
    coefficients, *_ = np.linalg.lstsq(matrix, target, rcond=None)
    residuals = matrix @ coefficients - target
    fixed, per_attention, per_mlp, per_unit = (float(value) for value in coefficients)
    return {
        "fixed_ms": fixed,
        "per_attention_ms": per_attention,
        "per_mlp_ms": per_mlp,
        "per_unit_ms": per_unit,
        "unit": "TFLOP" if scale == 1e12 else "GB",
        "max_residual_ms": float(np.abs(residuals).max()),
        "full_model_ms": observed[0],
    }
