"""Item 2: skipped sub-blocks pay off as much as the work they remove.

A 24-layer Llama (hidden 1024, where the layers dominate the cost) is timed in full and with 25 % / 50 % of its
attention sub-blocks skipped, the same for MLPs, and in a Nemotron-NAS-style mix (narrower FFNs, fewer KV heads,
some skips). Each variant's time relative to the full model is compared with the relative cost predicted from its
config; measured / predicted above 1 means the variant is slower than the work it does justifies.

- Prefill (compute-bound) is predicted from FLOPs.
- Decode is predicted by a cost model fitted on stock models only (`cost_model.py`): a fixed cost per step, per
  layer, per attention and per MLP sub-block, plus a cost per byte read. Three more stock models (FFN half as wide,
  a quarter of the KV heads, half the layers) are timed beside the others to fit it, with their sub-blocks timed by
  forward hooks in extra steps; their own measured / predicted shows how well the model fits. The prediction from
  bytes alone, which misses the work that does not scale with bytes, is kept in `results.json` for comparison.

Decode is timed with the default `DynamicCache` (what `generate` uses; judged) and with a `StaticCache` (reported):
the dynamic cache grows by `torch.cat` at every step in every attention layer, and the static run shows what decode
costs without it. Each cache gets its own fit.
"""

from __future__ import annotations

import gc
from typing import Any

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
    llama_config,
    model_parameters,
    nemotron_nas_style,
    paired_ratios,
    random_tokens,
)
from .cost_model import DecodeCostModel, SubBlockBytes, time_sub_blocks


TARGET = 1.05
FULL = "full"
# Stock models besides the full one, timed to fit the decode cost model: (name, changes to the full model's sizes).
STOCK_FITS = (
    ("stock, FFN half as wide", lambda sizes: {"intermediate_size": sizes["intermediate_size"] // 2}),
    ("stock, a quarter of the KV heads", lambda sizes: {"num_kv_heads": sizes["num_kv_heads"] // 4}),
    ("stock, half the layers", lambda sizes: {"num_layers": sizes["num_layers"] // 2}),
)
STOCK = (FULL, *(name for name, _ in STOCK_FITS))


def variants(quick: bool) -> dict[str, PreTrainedConfig]:
    """The full model first, then the stock models of the fit, then each heterogeneous variant (the full model's
    sizes with per-layer changes). Every model is smaller than the full one, so that it can share its weights."""
    if quick:
        sizes = {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4, "intermediate_size": 1024}
        sizes["vocab_size"] = 1000
    else:
        sizes = {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 4096}
    num_layers = sizes["num_layers"]
    base = llama_config(**sizes)
    configs = {FULL: base}
    for name, change in STOCK_FITS:
        configs[name] = llama_config(**{**sizes, **change(sizes)})
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
    ("decode", "decode, DynamicCache", "cost_model", True),
    ("decode_static", "decode, StaticCache", "cost_model_static", False),
)
BASIS_LABELS = {"flops": "FLOPs", "cost_model": "cost model", "cost_model_static": "cost model"}


def run(ctx: Context) -> BenchResult:
    configs = variants(ctx.quick)
    prompt_length, prefill_rounds, decode_steps = (32, 2, 4) if ctx.quick else (128, 24, 60)
    hooked_steps = 4 if ctx.quick else 20
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
    measured = {  # the stock models of the fit are there for decode
        "prefill": interleave(
            {
                name: Decoder(model, input_ids, ctx.device).prefill
                for name, model in models.items()
                if name == FULL or name not in STOCK
            },
            rounds=prefill_rounds,
            warmup=warmup,
        )
    }
    caches = {
        "decode": lambda model: None,
        "decode_static": lambda model: StaticCache(config=model.config, max_cache_len=max_cache_len),
    }
    sub_blocks: dict[str, dict[str, dict[str, Stats]]] = {}
    for phase, make_cache in caches.items():
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
        ctx.log(f"skips: {phase}, sub-blocks of the stock models timed by hooks, {hooked_steps} steps, taking turns")
        sub_blocks[phase] = time_sub_blocks(
            {
                name: (Decoder(models[name], input_ids, ctx.device, cache=make_cache(models[name])), models[name])
                for name in STOCK
            },
            hooked_steps,
        )
    del models, full_model
    gc.collect()

    hooked_past = {"decode": prompt_length + hooked_steps // 2, "decode_static": max_cache_len}
    timed_past = {"decode": past_tokens, "decode_static": max_cache_len}
    fits = {
        phase: _fit(configs, measured[phase], sub_blocks[phase], hooked_past[phase], element_size) for phase in caches
    }
    costs = {
        "flops": lambda config: forward_flops(config, prompt_length),
        "bytes": lambda config: decode_bytes(config, past_tokens, element_size),
        "bytes_static": lambda config: decode_bytes(config, max_cache_len, element_size),
        "decode_flops": lambda config: forward_flops(config, 1, past_tokens),
    }
    for phase, basis in (("decode", "cost_model"), ("decode_static", "cost_model_static")):
        model = fits[phase][0]
        costs[basis] = lambda config, m=model, past=timed_past[phase]: m.predict_ms(
            SubBlockBytes.of(config, past, element_size)
        )
    predictions = {
        basis: {name: cost(config) / cost(configs[FULL]) for name, config in configs.items()}
        for basis, cost in costs.items()
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
            if phase not in measured or name not in measured[phase]:
                continue
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
                    f"{name}: {label}, measured / predicted ({BASIS_LABELS[basis]})"
                    + (" (a model of the fit)" if name in STOCK else ""),
                    TARGET if judged and name not in STOCK else None,
                    ratio,
                    f"time x{Stats.of(relative).median:.3f} of full, predicted x{predicted:.3f}",
                )
            )
        row["decode"]["predicted_relative_time_bytes"] = predictions["bytes"][name]
        row["decode"]["predicted_relative_time_flops"] = predictions["decode_flops"][name]
        row["decode_static"]["predicted_relative_time_bytes"] = predictions["bytes_static"][name]
        per_variant[name] = row

    for phase, label, *_ in PHASES[1:]:
        model, residual = fits[phase]
        checks.append(
            Check.info(
                "2",
                f"{label}: cost model fitted on the {len(STOCK)} stock models, ms per step",
                detail=f"{model.fixed_ms:.2f} + {model.per_layer_ms:.3f}/layer + {model.per_attention_ms:.3f}/attention "
                f"+ {model.per_mlp_ms:.3f}/MLP + {model.per_gb_ms:.1f}/GB; largest residual {residual:.2f} ms",
            )
        )

    details = {
        "cost_models": {
            phase: {"coefficients": fit.to_json(), "largest_residual_ms": residual}
            for phase, (fit, residual) in fits.items()
        },
        "stock_sub_blocks_ms": {
            phase: {name: {kind: stats.__dict__ for kind, stats in kinds.items()} for name, kinds in per_model.items()}
            for phase, per_model in sub_blocks.items()
        },
        "prompt_length": prompt_length,
        "prefill_rounds": prefill_rounds,
        "decode_steps": decode_steps,
        "hooked_steps": hooked_steps,
        "static_max_cache_len": max_cache_len,
        "full_model": {
            "parameters": model_parameters(configs[FULL]),
            **{f"{phase}_s": Stats.of(measured[phase][FULL]).__dict__ for phase, *_ in PHASES},
            "prefill_flops": costs["flops"](configs[FULL]),
            "decode_bytes": costs["bytes"](configs[FULL]),
        },
        "variants": {name: row for name, row in per_variant.items() if name not in STOCK},
        "stock_models": {name: row for name, row in per_variant.items() if name in STOCK},
    }
    return BenchResult(checks, details)


def _fit(
    configs: dict[str, PreTrainedConfig],
    step_seconds: dict[str, list[float]],
    sub_blocks: dict[str, dict[str, Stats]],
    hooked_past: int,
    element_size: int,
) -> tuple[DecodeCostModel, float]:
    """Fits the cost model on the stock models: each one's hooked attention and MLP milliseconds per step, and the rest
    of its unhooked step (median)."""
    observations = []
    for name in STOCK:
        attention, mlp = sub_blocks[name]["attention"].median, sub_blocks[name]["mlp"].median
        rest = 1000 * Stats.of(step_seconds[name]).median - attention - mlp
        blocks = SubBlockBytes.of(configs[name], hooked_past, element_size)
        observations.append((blocks, {"attention": attention, "mlp": mlp, "rest": rest}))
    return DecodeCostModel.fit(observations)
