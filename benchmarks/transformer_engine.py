"""TransformerEngine decoder layers against stock layers holding the same weights, on a CUDA GPU (`make gpu-check`).

Three workloads, each measured side by side (interleaved rounds, `common.interleave`) and reported as the ratio
TE / stock of the time spent in the decoder layers, per layer:

- prefill: one forward of `batch x prompt` tokens through the layer stack;
- decode: one cached step of `batch` tokens after a `prompt`-token prefill (the cache is cropped back each round);
- training: forward and backward of the whole model on `batch x prompt` tokens.

Each in bf16, and in FP8 (TE's default recipe) where the GPU has FP8 (compute capability 8.9+). A ratio below 1 means
the TE layers are faster. Needs real TransformerEngine and CUDA; on other machines it says what is missing and exits 1.
Results: table on stdout, `benchmarks/results/transformer_engine.json`.

    python -m benchmarks.transformer_engine [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from transformers import AutoModelForCausalLM, DynamicCache
from transformers.heterogeneity.backends import TransformerEngineBackend
from transformers.heterogeneity.backends.transformer_engine import (
    TransformerEngineUnavailableError,
    import_transformer_engine,
)

from .common import Check, Stats, build_model, format_table, interleave, llama_config, paired_ratios, timed


RESULTS = Path(__file__).parent / "results" / "transformer_engine.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model and few rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per workload")
    return parser.parse_args(argv)


def layer_stack(model: Any) -> Any:
    """Runs only the decoder layers of `model` (embedding, rotary table and head computed once, outside the timing)."""
    base = model.model

    def run(input_ids: torch.Tensor, cache: DynamicCache | None = None) -> torch.Tensor:
        hidden = base.embed_tokens(input_ids)
        past = 0 if cache is None else cache.get_seq_length()
        positions = torch.arange(past, past + input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        position_embeddings = base.rotary_emb(hidden, positions)
        for layer in base.layers:
            hidden = layer(
                hidden, attention_mask=None, position_ids=positions, past_key_values=cache,
                position_embeddings=position_embeddings, use_cache=cache is not None,
            )  # fmt: skip
        return hidden

    return run


def measure(models: dict[str, Any], batch: int, prompt: int, rounds: int, vocab: int) -> dict[str, dict[str, list]]:
    device = next(iter(models.values())).device
    tokens = torch.randint(0, vocab, (batch, prompt), device=device)
    step = torch.randint(0, vocab, (batch, 1), device=device)
    results = {}
    stacks = {name: layer_stack(model) for name, model in models.items()}

    def prefill(name):
        with torch.no_grad():
            return timed(lambda: stacks[name](tokens), device)

    caches = {}
    for name in models:
        caches[name] = DynamicCache(config=models[name].config)
        with torch.no_grad():
            stacks[name](tokens, caches[name])

    def decode(name):
        with torch.no_grad():
            elapsed = timed(lambda: stacks[name](step, caches[name]), device)
        caches[name].crop(-1)  # back to the prompt
        return elapsed

    def train(name):
        model = models[name].train()

        def step_fn():
            model.zero_grad(set_to_none=True)
            model(tokens, labels=tokens).loss.backward()

        elapsed = timed(step_fn, device)
        model.eval()
        return elapsed

    for workload, function in (("prefill", prefill), ("decode", decode), ("training", train)):
        cases = {name: (lambda name=name, function=function: function(name)) for name in models}
        results[workload] = interleave(cases, rounds=rounds, warmup=2)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        te = import_transformer_engine()
    except TransformerEngineUnavailableError as error:
        print(f"benchmarks.transformer_engine: {error}", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    if args.quick:
        sizes = {"hidden_size": 256, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 768}
        batch, prompt, rounds = 2, 64, args.rounds or 5
    else:
        sizes = {"hidden_size": 2048, "num_layers": 4, "num_heads": 16, "num_kv_heads": 4, "intermediate_size": 5632}
        batch, prompt, rounds = 4, 512, args.rounds or 20
    config = llama_config(**sizes, attn_implementation="sdpa")
    stock = build_model(config, torch.bfloat16, device)
    fp8, reason = te.is_fp8_available(return_reason=True)
    with tempfile.TemporaryDirectory() as workdir:
        stock.save_pretrained(workdir)
        models = {"stock": stock}
        backends = {"te-bf16": "transformer_engine"}
        if fp8:
            backends["te-fp8"] = TransformerEngineBackend(fp8=True)
        for name, backend in backends.items():
            model = AutoModelForCausalLM.from_pretrained(workdir, decoder_backend=backend, dtype=torch.bfloat16)
            models[name] = model.to(device).eval()
    timings = measure(models, batch, prompt, rounds, config.vocab_size)
    checks = []
    for workload, per_model in timings.items():
        for name in backends:
            ratios = paired_ratios(per_model[name], per_model["stock"])
            scope = "whole model" if workload == "training" else "decoder layers"
            checks.append(Check.info(f"TE {workload}", f"{name} / stock time, {scope}", Stats.of(ratios)))
    if not fp8:
        checks.append(Check.info("TE fp8", f"not measured: {reason}"))
    print(format_table(checks))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "config": {**sizes, "batch": batch, "prompt": prompt, "rounds": rounds},
                "device": torch.cuda.get_device_name(device),
                "transformer_engine": importlib.metadata.version("transformer-engine"),
                "seconds": timings,
                "checks": [check.to_json() for check in checks],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
