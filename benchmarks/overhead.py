"""Item 1: what `per_layer_config` costs when it changes nothing structural.

The heterogeneous model gets a per-layer `attention_dropout` of 1e-9 on every layer. Upstream drops an override equal
to the global value (0.0 would leave the config homogeneous and measure nothing), while dropout is inactive in eval
mode: the layers compute exactly what the stock ones do, but every layer is built from its own config through the
package's per-layer path, and runs with that config. The benchmark checks both halves (the config is heterogeneous;
the logits equal the stock model's bit for bit) before it times anything.
"""

from __future__ import annotations

import gc
import shutil
import time
from typing import Any

import torch

from transformers import AutoModelForCausalLM, PreTrainedConfig

from .common import (
    BenchResult,
    Check,
    Context,
    Decoder,
    Stats,
    build_model,
    build_sharing_weights,
    interleave,
    llama_config,
    paired_ratios,
    random_tokens,
    timed,
)


TARGET = 1.02
NEUTRAL_OVERRIDE = {"attention_dropout": 1e-9}


def configs(quick: bool) -> tuple[PreTrainedConfig, PreTrainedConfig]:
    """(stock homogeneous, heterogeneous with neutral overrides) of the same model."""
    if quick:
        sizes = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512}
        sizes["vocab_size"] = 1000
    else:  # 124 M parameters: large enough to be a real model, small enough that fixed costs would show
        sizes = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "num_kv_heads": 4, "intermediate_size": 2048}
    homogeneous = llama_config(**sizes)
    heterogeneous = llama_config(
        **sizes, per_layer_config={layer_idx: dict(NEUTRAL_OVERRIDE) for layer_idx in range(sizes["num_layers"])}
    )
    if homogeneous.is_heterogeneous or not heterogeneous.is_heterogeneous:
        raise AssertionError("the overhead pair must be one stock config and one heterogeneous config")
    if heterogeneous.per_layer_attributes != set(NEUTRAL_OVERRIDE):
        raise AssertionError(f"unexpected per-layer attributes {heterogeneous.per_layer_attributes}")
    return homogeneous, heterogeneous


def run(ctx: Context) -> BenchResult:
    homogeneous, heterogeneous = configs(ctx.quick)
    rounds = 2 if ctx.quick else 21
    checks: list[Check] = []
    details: dict[str, Any] = {"config": _describe(homogeneous), "override": NEUTRAL_OVERRIDE}

    # Construction, as users do it: stock initialisation included (it is most of the time, and it is the same work).
    ctx.log("overhead: construction (stock initialisation)")
    times = interleave(
        {
            "homogeneous": lambda: _time_construction(homogeneous, ctx),
            "heterogeneous": lambda: _time_construction(heterogeneous, ctx),
        },
        rounds=rounds,
    )
    checks.append(_ratio_check("construction time", times, "construction_s", details))

    # Construction without weights (meta device): the per-layer Python work alone, as an absolute figure.
    ctx.log("overhead: construction on the meta device")
    times = interleave(
        {
            "homogeneous": lambda: _time_meta_construction(homogeneous),
            "heterogeneous": lambda: _time_meta_construction(heterogeneous),
        },
        rounds=3 if ctx.quick else 15,
    )
    extra_ms = 1000 * (Stats.of(times["heterogeneous"]).median - Stats.of(times["homogeneous"]).median)
    check = _ratio_check(
        "construction on meta device (Python work only)", times, "meta_construction_s", details, "info"
    )
    check.detail = f"+{extra_ms:.1f} ms per model ({homogeneous.num_hidden_layers} layers)"
    checks.append(check)

    # The same weights in both models: the heterogeneous one is built on the stock one's tensors (no copy).
    reference = build_model(homogeneous, ctx.dtype, ctx.device)
    model = build_sharing_weights(heterogeneous, reference)
    _check_identical(reference, model, homogeneous.vocab_size, ctx.device)

    ctx.log("overhead: from_pretrained")
    paths = {"homogeneous": ctx.workdir / "overhead-homogeneous", "heterogeneous": ctx.workdir / "overhead-hetero"}
    reference.save_pretrained(paths["homogeneous"])
    model.save_pretrained(paths["heterogeneous"])
    clocks = interleave(
        {name: lambda path=path: _time_from_pretrained(path) for name, path in paths.items()},
        rounds=rounds if ctx.quick else 20,
    )
    # CPU time judged: on a shared VM it varies far less than the wall-clock time (reported beside it).
    for index, (label, kind) in enumerate((("from_pretrained CPU time", "max"), ("from_pretrained time", "info"))):
        times = {name: [pair[index] for pair in values] for name, values in clocks.items()}
        checks.append(_ratio_check(label, times, f"from_pretrained_{('cpu', 'wall')[index]}_s", details, kind))
    for path in paths.values():
        shutil.rmtree(path)

    prompt_length, prefill_rounds, decode_steps = (32, 2, 4) if ctx.quick else (128, 20, 60)
    ctx.log(f"overhead: prefill ({prompt_length} tokens, {prefill_rounds} rounds) and decode ({decode_steps} steps)")
    models = {"homogeneous": reference, "heterogeneous": model}
    input_ids = random_tokens(1, prompt_length, homogeneous.vocab_size, ctx.device)
    times = interleave(
        {name: Decoder(m, input_ids, ctx.device).prefill for name, m in models.items()},
        rounds=prefill_rounds,
        warmup=2,
    )
    checks.append(_ratio_check(f"prefill time ({prompt_length} tokens)", times, "prefill_s", details))
    decoders = {name: Decoder(m, input_ids, ctx.device) for name, m in models.items()}
    for decoder in decoders.values():
        decoder.prefill()
    times = interleave({name: decoder.step for name, decoder in decoders.items()}, rounds=decode_steps, warmup=2)
    checks.append(_ratio_check("decode time per token", times, "decode_step_s", details))
    details.update(prompt_length=prompt_length, prefill_rounds=prefill_rounds, decode_steps=decode_steps)
    del models, decoders, reference, model
    gc.collect()
    return BenchResult(checks, details)


def _ratio_check(
    name: str, times: dict[str, list[float]], key: str, details: dict[str, Any], kind: str = "max"
) -> Check:
    ratios = paired_ratios(times["heterogeneous"], times["homogeneous"])
    details[key] = {case: Stats.of(values).__dict__ for case, values in times.items()}
    stock, heterogeneous = (Stats.of(times[case]).median for case in ("homogeneous", "heterogeneous"))
    return Check.at_most(
        "1",
        f"{name}, heterogeneous / stock",
        TARGET if kind == "max" else None,
        Stats.of(ratios),
        f"medians: stock {_seconds(stock)}, heterogeneous {_seconds(heterogeneous)}",
    )


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _time_construction(config: PreTrainedConfig, ctx: Context) -> float:
    gc.collect()
    holder: list[Any] = []
    seconds = timed(lambda: holder.append(AutoModelForCausalLM.from_config(config)), torch.device("cpu"))
    holder.clear()
    return seconds


def _time_meta_construction(config: PreTrainedConfig) -> float:
    def build() -> None:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)

    return timed(build, torch.device("cpu"))


def _time_from_pretrained(path: Any) -> tuple[float, float]:
    """(CPU seconds of the process, wall-clock seconds) of one `from_pretrained`."""
    gc.collect()
    holder: list[Any] = []
    cpu = time.process_time()
    seconds = timed(lambda: holder.append(AutoModelForCausalLM.from_pretrained(path)), torch.device("cpu"))
    cpu = time.process_time() - cpu
    holder.clear()
    return cpu, seconds


@torch.inference_mode()
def _check_identical(reference: Any, model: Any, vocab_size: int, device: torch.device) -> None:
    """The neutral overrides must change nothing: same parameters, bit-identical logits, and yet every layer runs
    with its own per-layer config (the package's path, not the stock one)."""
    dropouts = {layer.self_attn.attention_dropout for layer in model.model.layers}
    if dropouts != {NEUTRAL_OVERRIDE["attention_dropout"]}:
        raise AssertionError(f"the layers were not built from their per-layer configs (dropouts {dropouts})")
    input_ids = random_tokens(1, 16, vocab_size, device, seed=1)
    if not torch.equal(reference(input_ids).logits, model(input_ids).logits):
        raise AssertionError("neutral per-layer overrides changed the logits")


def _describe(config: PreTrainedConfig) -> dict[str, int]:
    return {
        name: getattr(config, name)
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "vocab_size",
        )
    }
