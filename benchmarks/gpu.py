"""A heterogeneous child against its parent on one NVIDIA GPU: `benchmarks/gpu.sh` runs this (see its header).

The parent is a Llama-3-8B-shaped model (hidden 4096, 32 layers, 32 heads, 8 KV heads, FFN 14336, bf16) with random
weights; the child is the parent with a Nemotron-NAS-style mix (`common.nemotron_nas_style`: narrower FFNs, fewer KV
heads, some attention and MLP sub-blocks skipped), built on the parent's weights. Sections, each measured side by side
(child and parent taking turns, `common.interleave`):

- `eager`: prefill time (batch 1) and decode tokens/s (batch 1 and 16, `DynamicCache`) for every attention
  implementation the machine has (`sdpa` always, `flash_attention_2` / `_3` where installed), with the ratios that
  FLOPs and bytes read predict;
- `continuous_batching`: tokens/s of `ContinuousBatchingManager` (what `generate_batch` and `transformers serve` run)
  serving the same requests with the same KV-cache memory in bytes, and how many sequences of a fixed length that
  memory admits (upstream's own admission count, checked against the per-layer arithmetic);
- `compile`: decode tokens/s through `torch.compile(model.forward, fullgraph=True, mode="reduce-overhead")` with a
  `StaticCache`, and the compile time;
- `transformer_engine`: the same decode and prefill with `decoder_backend="transformer_engine"`, when TE is installed.

A section that fails is recorded with its error and the others still run; the exit status is 1 then. Sections that
would not fit in the time left (`--budget-s`) are skipped and say so. Writes `gpu.json` and `gpu.png`.

`--dry-run` runs every section on tiny sizes on the CPU (fp32, `torch.compile` with the `eager` backend): a check that
the script works, in well under a minute, not a measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import transformers
from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, PreTrainedConfig, StaticCache
from transformers.initialization import no_init_weights

from .common import (
    Decoder,
    Stats,
    build_sharing_weights,
    decode_bytes,
    forward_flops,
    interleave,
    llama_config,
    nemotron_nas_style,
    paired_ratios,
    random_tokens,
    sync,
)
from .serving import capacity, page_bytes, serve


SECTIONS = ("eager", "continuous_batching", "compile", "transformer_engine")
# Seconds each section takes on an H200 at full size (with margin), to skip what no longer fits in the budget.
ESTIMATED_S = {"eager": 60, "continuous_batching": 90, "compile": 200, "transformer_engine": 60}


def sizes(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        model = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 256,
                 "vocab_size": 512}  # fmt: skip
        return {"model": model, "prompt": 8, "decode_steps": 3, "prefill_rounds": 2, "batches": (1, 2),
                "cb_requests": 4, "cb_new_tokens": 4, "kv_budget_bytes": 2**20, "capacity_length": 64,
                "compile_steps": 3}  # fmt: skip
    model = {"hidden_size": 4096, "num_layers": 32, "num_heads": 32, "num_kv_heads": 8, "intermediate_size": 14336,
             "vocab_size": 128256}  # fmt: skip
    return {"model": model, "prompt": 512, "decode_steps": 64, "prefill_rounds": 10, "batches": (1, 16),
            "cb_requests": 64, "cb_new_tokens": 128, "kv_budget_bytes": 16 * 2**30, "capacity_length": 4096,
            "compile_steps": 64}  # fmt: skip


def build_on_device(config: PreTrainedConfig, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """`AutoModelForCausalLM.from_config` allocated on `device` directly, weights drawn there from N(0, 0.02) (norms
    at one): an 8B model is built in seconds on a GPU, without a copy through host memory."""
    with no_init_weights(), torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def attention_implementations(device: torch.device) -> list[str]:
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    found = ["sdpa"]
    if device.type == "cuda":
        found += [name for name, available in (("flash_attention_2", is_flash_attn_2_available()),
                                               ("flash_attention_3", is_flash_attn_3_available())) if available]  # fmt: skip
    return found


class Run:
    """The configs, the models (built once, shared by the sections), the clock and the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.device = torch.device("cpu" if args.dry_run else "cuda")
        self.dtype = torch.float32 if args.dry_run else torch.bfloat16
        self.sizes = sizes(args.dry_run)
        self.parent_config = llama_config(**self.sizes["model"], attn_implementation="sdpa")
        self.child_config = llama_config(
            **self.sizes["model"], attn_implementation="sdpa", per_layer_config=nemotron_nas_style(self.parent_config)
        )
        self.models: dict[str, Any] = {}
        self.results: dict[str, Any] = {"sections": {}}

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", file=sys.stderr, flush=True)

    def remaining_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.started)

    def build(self) -> None:
        self.log("building the parent and the child on its weights")
        parent = build_on_device(self.parent_config, self.dtype, self.device)
        self.models = {"parent": parent, "child": build_sharing_weights(self.child_config, parent)}
        sync(self.device)

    def section(self, name: str, function: Callable[[], dict[str, Any]]) -> None:
        if name not in self.args.sections:
            return
        if not self.args.dry_run and self.remaining_s() < ESTIMATED_S[name]:
            self.results["sections"][name] = {"status": "skipped", "reason": f"{self.remaining_s():.0f} s left of "
                                              f"the {self.args.budget_s} s budget, the section needs about "
                                              f"{ESTIMATED_S[name]} s"}  # fmt: skip
            self.log(f"{name}: skipped (time budget)")
            return
        self.log(f"{name}: running")
        start = time.perf_counter()
        try:
            result = {"status": "ok", **function()}
        except Exception as error:  # a failing section must not lose the others' figures
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000],
                      "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
            self.log(f"{name}: FAILED {result['error'][:300]}")
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        result["seconds"] = time.perf_counter() - start
        self.results["sections"][name] = result


# ----------------------------------------------------------------------------------------------------------------------
# Sections


def predicted_ratios(run: Run, batch: int) -> dict[str, float]:
    """Child / parent time that FLOPs (prefill) and bytes read (decode) predict."""
    element_size = torch.empty((), dtype=run.dtype).element_size()
    prompt, steps = run.sizes["prompt"], run.sizes["decode_steps"]
    child, parent = run.child_config, run.parent_config
    return {
        "prefill_flops": forward_flops(child, prompt) / forward_flops(parent, prompt),
        "decode_bytes": decode_bytes(child, prompt + steps // 2, element_size)
        / decode_bytes(parent, prompt + steps // 2, element_size),
        "decode_flops": forward_flops(child, batch, prompt + steps // 2)
        / forward_flops(parent, batch, prompt + steps // 2),
    }


def _compare(times: dict[str, list[float]], tokens: int) -> dict[str, Any]:
    """Per-model tokens/s (median) and the child / parent time ratio, paired by round."""
    return {
        "tokens_per_s": {name: tokens / Stats.of(values).median for name, values in times.items()},
        "child_over_parent_time": Stats.of(paired_ratios(times["child"], times["parent"])).__dict__,
    }


def eager_section(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"implementations": {}}
    vocab = run.parent_config.vocab_size
    for implementation in attention_implementations(run.device):
        for model in run.models.values():
            model.set_attn_implementation(implementation)
        rows: dict[str, Any] = {}
        prompt_ids = random_tokens(1, run.sizes["prompt"], vocab, run.device)
        prefill = interleave(
            {name: Decoder(model, prompt_ids, run.device).prefill for name, model in run.models.items()},
            rounds=run.sizes["prefill_rounds"],
        )
        rows["prefill"] = {**_compare(prefill, run.sizes["prompt"]),
                           "ms": {name: 1000 * Stats.of(v).median for name, v in prefill.items()}}  # fmt: skip
        for batch in run.sizes["batches"]:
            ids = random_tokens(batch, run.sizes["prompt"], vocab, run.device, seed=batch)
            decoders = {name: Decoder(model, ids, run.device) for name, model in run.models.items()}
            for decoder in decoders.values():
                decoder.prefill()
            steps = interleave({name: d.step for name, d in decoders.items()}, rounds=run.sizes["decode_steps"])
            rows[f"decode_batch_{batch}"] = {**_compare(steps, batch), "predicted": predicted_ratios(run, batch)}
            del decoders
        out["implementations"][implementation] = rows
    for model in run.models.values():
        model.set_attn_implementation("sdpa")
    return out


def continuous_batching_section(run: Run) -> dict[str, Any]:
    vocab, budget = run.parent_config.vocab_size, run.sizes["kv_budget_bytes"]
    element_size = torch.empty((), dtype=run.dtype).element_size()
    lengths = [run.sizes["prompt"] // 4 + (97 * i) % run.sizes["prompt"] for i in range(run.sizes["cb_requests"])]
    prompts = [random_tokens(1, n, vocab, torch.device("cpu"), seed=i)[0].tolist() for i, n in enumerate(lengths)]
    new_tokens = run.sizes["cb_new_tokens"]
    configs = {"parent": run.parent_config, "child": run.child_config}
    out: dict[str, Any] = {"kv_budget_bytes": budget, "requests": len(prompts), "new_tokens": new_tokens}
    # The same KV memory for both: a page of the child (fewer KV heads, layers without attention) is smaller.
    block_bytes = {name: sum(size for _, size in page_bytes(config, element_size)) for name, config in configs.items()}
    out["kv_bytes_per_token"] = {name: value // 64 for name, value in block_bytes.items()}
    cb_configs = {name: ContinuousBatchingConfig(page_size=64, num_blocks=budget // block_bytes[name],
                                                 max_batch_tokens=4096 if not run.args.dry_run else 64)
                  for name in configs}  # fmt: skip
    if run.args.dry_run:
        for cb_config in cb_configs.values():
            cb_config.use_cuda_graph = False

    def measure() -> dict[str, list[float]]:
        cases = {
            # Wall-clock seconds: on a GPU the host's CPU time is not what a request waits for.
            name: lambda m=model, n=name: serve(m, prompts, new_tokens, cb_configs[n])[0]
            for name, model in run.models.items()
        }
        return interleave(cases, rounds=1 if run.args.dry_run else 2)

    try:
        times = measure()  # with upstream's default use of CUDA graphs
    except Exception as error:
        if run.args.dry_run:
            raise
        out["error_with_default_cuda_graphs"] = f"{type(error).__name__}: {error}"[:1000]
        for cb_config in cb_configs.values():
            cb_config.use_cuda_graph = False
        times = measure()
    out["use_cuda_graph"] = {name: str(cb_config.use_cuda_graph) for name, cb_config in cb_configs.items()}
    out["throughput"] = _compare(times, len(prompts) * new_tokens)
    out["capacity"] = {}
    for name, config in configs.items():
        admitted, expected, cache_bytes = capacity(config, budget, run.sizes["capacity_length"], run.dtype)
        out["capacity"][name] = {"sequences": admitted, "per_layer_arithmetic": expected, "cache_bytes": cache_bytes}
    out["capacity"]["length"] = run.sizes["capacity_length"]
    return out


def compile_section(run: Run) -> dict[str, Any]:
    prompt, steps = run.sizes["prompt"], run.sizes["compile_steps"]
    ids = random_tokens(1, prompt, run.parent_config.vocab_size, run.device)
    options = {"backend": "eager"} if run.args.dry_run else {"mode": "reduce-overhead"}
    decoders, compile_s = {}, {}
    for name, model in run.models.items():
        cache = StaticCache(config=model.config, max_cache_len=prompt + steps + 4)
        forward = torch.compile(model.forward, fullgraph=True, dynamic=False, **options)
        decoders[name] = Decoder(model, ids, run.device, cache=cache, forward=forward)
        decoders[name].prefill()
        compile_s[name] = decoders[name].step() + decoders[name].step()  # traces, compiles (and records the graph)
    times = interleave({name: d.step for name, d in decoders.items()}, rounds=steps)
    torch._dynamo.reset()
    return {"options": {k: str(v) for k, v in options.items()}, "compile_s": compile_s, **_compare(times, 1)}


def transformer_engine_section(run: Run) -> dict[str, Any]:
    from transformers.heterogeneity.backends.transformer_engine import (
        TransformerEngineUnavailableError,
        import_transformer_engine,
    )

    try:
        import_transformer_engine()
    except TransformerEngineUnavailableError as error:
        return {"status": "skipped", "reason": str(error)}
    te_models = {}
    for name, config in (("parent", run.parent_config), ("child", run.child_config)):
        with torch.device(run.device):
            model = AutoModelForCausalLM.from_config(config, dtype=run.dtype, decoder_backend="transformer_engine")
        te_models[name] = model.eval()
    ids = random_tokens(1, run.sizes["prompt"], run.parent_config.vocab_size, run.device)
    prefill = interleave({n: Decoder(m, ids, run.device).prefill for n, m in te_models.items()}, rounds=5)
    decoders = {n: Decoder(m, ids, run.device) for n, m in te_models.items()}
    for decoder in decoders.values():
        decoder.prefill()
    steps = interleave({n: d.step for n, d in decoders.items()}, rounds=run.sizes["decode_steps"])
    return {"prefill": _compare(prefill, run.sizes["prompt"]), "decode_batch_1": _compare(steps, 1)}


# ----------------------------------------------------------------------------------------------------------------------
# Report


def environment(run: Run, started_with_hook: bool | None) -> dict[str, Any]:
    from transformers.heterogeneity import activation

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "transformers_path": str(Path(transformers.__file__).parent),
        # The `.pth` file ran when the interpreter started, as in a user's installation (checked by `gpu.sh`).
        "started_with_activation_hook": started_with_hook,
        "active": activation.is_active(),
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "CPU",
        "dtype": str(run.dtype),
        "dry_run": run.args.dry_run,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if run.device.type == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(run.device).total_memory / 2**30
    return info


def plot(results: dict[str, Any], path: Path) -> None:
    """Tokens/s of the parent and the child in each measurement, and the sequences their KV memory admits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = results["sections"]
    groups: dict[str, list[tuple[str, dict[str, float]]]] = {"eager decode": [], "continuous batching": [],
                                                             "torch.compile / TransformerEngine decode": []}  # fmt: skip
    for implementation, rows in sections.get("eager", {}).get("implementations", {}).items():
        for key, row in rows.items():
            if key.startswith("decode"):
                groups["eager decode"].append((f"{implementation}\n{key.replace('decode_', '')}", row["tokens_per_s"]))
    if "throughput" in sections.get("continuous_batching", {}):
        groups["continuous batching"].append(
            ("all requests", sections["continuous_batching"]["throughput"]["tokens_per_s"])
        )
    if "tokens_per_s" in sections.get("compile", {}):
        groups["torch.compile / TransformerEngine decode"].append(("compiled", sections["compile"]["tokens_per_s"]))
    if "decode_batch_1" in sections.get("transformer_engine", {}):
        groups["torch.compile / TransformerEngine decode"].append(
            ("TransformerEngine", sections["transformer_engine"]["decode_batch_1"]["tokens_per_s"])
        )
    figure, axes = plt.subplots(1, 4, figsize=(18, 4))
    colors = {"parent": "#e6550d", "child": "#3182bd"}
    for axis, (title, bars) in zip(axes, groups.items()):
        for offset, name in enumerate(colors):
            axis.bar([x + 0.4 * offset - 0.2 for x in range(len(bars))], [values.get(name, 0.0) for _, values in bars],
                     0.4, color=colors[name], label=name)  # fmt: skip
        labels = [f"{label}\nx{values['child'] / values['parent']:.2f}" if values.get("parent") else label
                  for label, values in bars]  # fmt: skip
        axis.set_xticks(range(len(bars)), labels, fontsize=7)
        axis.set_title(f"{title}: tokens/s (child / parent below)" if bars else f"{title}: not measured", fontsize=9)
        axis.legend(fontsize=7)
    capacity_ = sections.get("continuous_batching", {}).get("capacity")
    if capacity_:
        axes[3].bar(list(colors), [capacity_[name]["sequences"] for name in colors], color=list(colors.values()))
        budget = sections["continuous_batching"]["kv_budget_bytes"] / 2**30
        axes[3].set_title(f"sequences of {capacity_['length']} tokens in {budget:.3g} GiB of KV cache", fontsize=9)
    else:
        axes[3].set_title("KV capacity: not measured", fontsize=9)
    info = results["environment"]
    figure.suptitle(f"{info['device']}, {info['dtype']}, torch {info['torch']}, transformers {info['transformers']}"
                    + (" (dry run on the CPU: not a measurement)" if info["dry_run"] else ""), fontsize=10)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A heterogeneous child against its parent on one NVIDIA GPU.")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing"
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results" / "gpu")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip sections that would end later than this")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, started_with_hook: bool | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("benchmarks.gpu: needs a CUDA GPU and a CUDA build of torch (or --dry-run)", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    run = Run(args)
    run.results["environment"] = environment(run, started_with_hook)
    run.results["sizes"] = {key: list(v) if isinstance(v, tuple) else v for key, v in run.sizes.items()}
    run.results["per_layer_config"] = {str(k): v for k, v in run.child_config.to_dict()["per_layer_config"].items()}
    run.log(f"{run.results['environment']['device']}; transformers {transformers.__version__} from "
            f"{run.results['environment']['transformers_path']}")  # fmt: skip
    run.build()
    for name, function in (("eager", eager_section), ("continuous_batching", continuous_batching_section),
                           ("compile", compile_section), ("transformer_engine", transformer_engine_section)):  # fmt: skip
        run.section(name, lambda f=function: f(run))
    run.results["runtime_s"] = time.perf_counter() - run.started
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.output_dir, suffix=".tmp", delete=False) as handle:
        json.dump(run.results, handle, indent=1, default=str)
    Path(handle.name).replace(args.output_dir / "gpu.json")
    plot(run.results, args.output_dir / "gpu.png")
    failed = [name for name, section in run.results["sections"].items() if section.get("status") == "failed"]
    run.log(f"wrote {args.output_dir / 'gpu.json'} and gpu.png; failed sections: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
