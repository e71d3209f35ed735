"""Item 8: `from_pretrained` of a heterogeneous checkpoint in a fresh process costs what a stock checkpoint of the same
size costs, for models built from `per_layer_config` and for the checkpoint families loaded natively.

Four pairs, each a heterogeneous checkpoint and a stock one of the same weight bytes, saved in bf16 shards:

- **Llama + `per_layer_config`**: a Nemotron-NAS-style mix (`common.nemotron_nas_style`) against a homogeneous Llama
  whose FFN width matches its weight bytes;
- **Nemotron-NAS** in the release's layout (`model_type: "nemotron-nas"`, `block_configs` with every field, as in
  Llama-3.1-Nemotron-51B's `config.json`): KV-head groups, FFN multipliers, no-op and linear sub-blocks, against a Llama;
- **gpt-oss-puzzle** (`block_configs` with per-layer expert counts and windows, as gpt-oss-puzzle-88B's) against a
  GPT-OSS with the mean expert count;
- **Nemotron-H Puzzle** (flat `block_configs` keyed by `block_type`, blockwise fields deleted from the globals, as
  Nemotron-Labs-3-Puzzle's) against a NemotronH with the same block pattern and the mean expert count.

Each load runs in a fresh interpreter (`python -m benchmarks.load_families --worker DIR MODULE`) that has imported
torch, Transformers and the stock architecture's modeling module (both sides pay for nothing else before the timer
starts: a family's own modules are imported inside `from_pretrained`, as for a user); heterogeneous and stock loads
alternate. The worker reports the wall-clock and the CPU time (`time.process_time`, all threads) of
`from_pretrained`. The CPU time is judged: the checkpoints are read from the page cache and memory-mapped, so a load
is CPU work, and on an idle machine its wall-clock time is its CPU time (the loader's threads overlap little); on a
shared VM the wall-clock also counts other tenants' work. The wall-clock ratio is reported beside it, and the CPU time
is split into reading the config, building the model, loading the weights and the rest (`_PhaseClock`).

Three more loads of each checkpoint run under `cProfile` (CPU clock); where the heterogeneous ones spend more than the
stock ones, by function and by source file, is kept in `results.json` (`details.<pair>.profile`): the profile that
explains a remaining gap.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import os
import pstats
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformers import AutoConfig, GptOssConfig, NemotronHConfig, PreTrainedConfig

from .common import (
    REPO_ROOT,
    BenchResult,
    Check,
    Context,
    Stats,
    build_model,
    fresh_interpreter_env,
    interleave,
    llama_config,
    model_parameters,
    nemotron_nas_style,
    paired_ratios,
    same_size_ffn_width,
)


TARGET = 1.02
PROFILE_ROWS = 12
PROFILED_LOADS = 3  # per side, averaged: one profiled load is as noisy as one timed load


@dataclass(frozen=True)
class Pair:
    """A heterogeneous checkpoint and a stock one of the same size. Each side is a `config.json` dict (written as
    is, then built with random weights and saved by `save_pretrained`, which keeps a family's own format) or a stock
    config object."""

    name: str
    heterogeneous: dict[str, Any] | PreTrainedConfig
    stock: PreTrainedConfig
    stock_module: str  # the stock architecture's modeling module, imported before the timer in both workers


# ----------------------------------------------------------------------------------------------------------------------
# The pairs


def _llama_sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "num_kv_heads": 2, "intermediate_size": 1024,
                "vocab_size": 1000}  # fmt: skip
    return {"hidden_size": 512, "num_layers": 32, "num_heads": 8, "num_kv_heads": 4, "intermediate_size": 2048,
            "vocab_size": 32000}  # fmt: skip


def llama_pair(quick: bool) -> Pair:
    sizes = _llama_sizes(quick)
    heterogeneous = llama_config(**sizes, per_layer_config=nemotron_nas_style(llama_config(**sizes)))
    width = same_size_ffn_width(sizes, model_parameters(heterogeneous))
    return Pair("Llama + per_layer_config", heterogeneous, llama_config(**{**sizes, "intermediate_size": width}),
                "transformers.models.llama.modeling_llama")  # fmt: skip


# Blocks of a Nemotron-NAS release, repeated over the layers: (KV-head group or "no_op" / "linear", FFN multiplier
# or "no_op" / "linear"). The widths `int(2 * mult * hidden / 3)` rounded up to 256 differ from layer to layer.
NAS_BLOCKS = (
    (4, 2.625),
    (8, 1.5),
    ("no_op", 2.0),
    (4, 0.75),
    ("linear", 2.625),
    (2, "no_op"),
    (8, 1.5),
    (4, "linear"),
)
# The fields of a block entry in the release's `config.json` (Llama-3.1-Nemotron-51B), null or false where unused.
NAS_ATTENTION_FIELDS = ("n_heads_in_group", "no_op", "num_sink_tokens", "replace_with_linear", "sparsify",
                        "unshifted_sink", "use_prefill_window_in_sink_attention", "window_length")  # fmt: skip
NAS_FFN_FIELDS = ("ffn_mult", "no_op", "replace_with_linear", "sparsify")


def _nas_entry(fields: tuple[str, ...], size_field: str, value: Any) -> dict[str, Any]:
    entry = {field: False if field in ("no_op", "replace_with_linear", "unshifted_sink",
                                        "use_prefill_window_in_sink_attention") else None for field in fields}  # fmt: skip
    if value == "no_op":
        entry["no_op"] = True
    elif value == "linear":
        entry["replace_with_linear"] = True
    else:
        entry[size_field] = value
    return entry


def nemotron_nas_pair(quick: bool) -> Pair:
    sizes = _llama_sizes(quick)
    blocks = [
        {"attention": _nas_entry(NAS_ATTENTION_FIELDS, "n_heads_in_group", attention),
         "ffn": _nas_entry(NAS_FFN_FIELDS, "ffn_mult", ffn)}
        for attention, ffn in (NAS_BLOCKS[i % len(NAS_BLOCKS)] for i in range(sizes["num_layers"]))
    ]  # fmt: skip
    release = {
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {
            "AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
        },  # fmt: skip
        "block_configs": blocks,
        "hidden_size": sizes["hidden_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "num_key_value_heads": None,
        "intermediate_size": None,
        "vocab_size": sizes["vocab_size"],
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },  # fmt: skip
        "max_position_embeddings": 131072,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    parameters = sum(parameter.numel() for parameter in _meta_model(release).parameters())
    width = same_size_ffn_width(sizes, parameters)
    return Pair("Nemotron-NAS (release layout)", release, llama_config(**{**sizes, "intermediate_size": width}),
                "transformers.models.llama.modeling_llama")  # fmt: skip


def gpt_oss_puzzle_pair(quick: bool) -> Pair:
    layers, hidden, experts = (4, 64, (4, 2)) if quick else (24, 512, (8, 4))
    globals_ = {
        "hidden_size": hidden, "intermediate_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": hidden // 8, "num_experts_per_tok": 2, "vocab_size": 1000 if quick
        else 32000, "rms_norm_eps": 1e-5, "attention_bias": True, "swiglu_limit": 7.0, "tie_word_embeddings": False,
    }  # fmt: skip
    # gpt-oss alternates windowed and full layers; the puzzle keeps that, shortens some windows and removes experts.
    windows = [None if i % 2 else (64 if i % 4 == 0 else 128) for i in range(layers)]
    blocks = [{"num_local_experts": experts[i % 2], "sliding_window": window} for i, window in enumerate(windows)]
    release = {
        "architectures": ["GptOssPuzzleForCausalLM"],
        "model_type": "gpt_oss_puzzle",
        "auto_map": {
            "AutoConfig": "configuration_gpt_oss_puzzle.GptOssPuzzleConfig",
            "AutoModelForCausalLM": "modeling_gpt_oss_puzzle.GptOssPuzzleForCausalLM",
        },  # fmt: skip
        "block_configs": blocks,
        **globals_,
        "num_local_experts": max(experts),
        "sliding_window": 128,
        "torch_dtype": "bfloat16",
    }
    layer_types = ["full_attention" if window is None else "sliding_attention" for window in windows]
    stock = GptOssConfig(**globals_, num_local_experts=sum(experts) // 2, sliding_window=128, layer_types=layer_types)
    return Pair("gpt-oss-puzzle", release, stock, "transformers.models.gpt_oss.modeling_gpt_oss")


def nemotron_h_puzzle_pair(quick: bool) -> Pair:
    # Nemotron-H's hybrid pattern: Mamba2 and MoE blocks alternating, an attention block now and then.
    pattern = "MEM*E-ME" if quick else "MEMEM*EM" * 3 + "MEME*EM-"
    experts = (4, 2) if quick else (16, 8)
    hidden = 64 if quick else 512
    globals_ = {
        "vocab_size": 1000 if quick else 32000, "hidden_size": hidden, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": hidden // 8, "mamba_num_heads": 8, "mamba_head_dim": hidden // 4,
        "n_groups": 2, "ssm_state_size": 16, "conv_kernel": 4, "expand": 2, "chunk_size": 64, "n_shared_experts": 1,
        "mlp_hidden_act": "relu2", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False, "pad_token_id": None,
        "bos_token_id": None, "eos_token_id": None,
    }  # fmt: skip
    moe = {"num_experts_per_tok": 2, "moe_intermediate_size": hidden, "moe_shared_expert_intermediate_size": hidden}
    blocks, moe_blocks = [], 0
    for letter in pattern:
        if letter == "E":
            blocks.append({"block_type": "moe", "n_routed_experts": experts[moe_blocks % 2], **moe})
            moe_blocks += 1
        elif letter == "-":
            blocks.append({"block_type": "mlp", "intermediate_size": 2 * hidden})
        else:
            blocks.append({"block_type": {"M": "mamba", "*": "attention"}[letter]})
    members = sorted({field for block in blocks for field in block})
    release = {
        "architectures": ["NemotronHPuzzleForCausalLM"],
        "model_type": "nemotron_h_puzzle",
        "auto_map": {
            "AutoConfig": "configuration_nemotron_h_puzzle.NemotronHPuzzleConfig",
            "AutoModelForCausalLM": "modeling_nemotron_h_puzzle.NemotronHPuzzleForCausalLM",
        },  # fmt: skip
        "block_configs": blocks,
        "mtp_block_configs": [],
        "blockwise_members": members,
        "hybrid_override_pattern": pattern,
        "num_nextn_predict_layers": 0,
        **globals_,
        "torch_dtype": "bfloat16",
    }
    block_types = {"M": "mamba", "E": "moe", "*": "attention", "-": "mlp"}
    stock = NemotronHConfig(
        **globals_, **moe, n_routed_experts=sum(experts) // 2, intermediate_size=2 * hidden,
        layers_block_type=[block_types[letter] for letter in pattern],
    )  # fmt: skip
    return Pair("Nemotron-H Puzzle", release, stock, "transformers.models.nemotron_h.modeling_nemotron_h")


PAIRS: tuple[Callable[[bool], Pair], ...] = (
    llama_pair,
    nemotron_nas_pair,
    gpt_oss_puzzle_pair,
    nemotron_h_puzzle_pair,
)


def _meta_model(release: dict[str, Any]) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(_config(release, None))


def _config(source: dict[str, Any] | PreTrainedConfig, directory: Path | None) -> PreTrainedConfig:
    """A config object; a release `config.json` is written to `directory` and read back as users read it."""
    if isinstance(source, PreTrainedConfig):
        return source
    if directory is None:
        return AutoConfig.for_model(**source)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(source))
    return AutoConfig.from_pretrained(directory)


# ----------------------------------------------------------------------------------------------------------------------
# Measurement


def run(ctx: Context) -> BenchResult:
    rounds = 2 if ctx.quick else 8
    shard = "2MB" if ctx.quick else "200MB"
    checks: list[Check] = []
    details: dict[str, Any] = {"rounds": rounds, "max_shard_size": shard}
    for make_pair in PAIRS:
        pair = make_pair(ctx.quick)
        paths = {"heterogeneous": ctx.workdir / "families-heterogeneous", "stock": ctx.workdir / "families-stock"}
        weight_bytes = {}
        for seed, (side, source) in enumerate((("heterogeneous", pair.heterogeneous), ("stock", pair.stock))):
            model = build_model(_config(source, paths[side]), torch.bfloat16, torch.device("cpu"), seed=seed)
            weight_bytes[side] = sum(p.numel() * p.element_size() for p in model.parameters())
            model.save_pretrained(paths[side], max_shard_size=shard)
            del model
            gc.collect()
        ctx.log(f"load_families: {pair.name}, {rounds} rounds of fresh-process loads")
        runs = interleave(
            {side: lambda p=path, m=pair.stock_module: _in_subprocess(p, m) for side, path in paths.items()},
            rounds,
        )
        profiles = {side: _profiled_loads(path, pair.stock_module) for side, path in paths.items()}
        for path in paths.values():
            shutil.rmtree(path)
        times = {clock: {side: [r[f"{clock}_s"] for r in runs[side]] for side in runs} for clock in ("cpu", "wall")}
        bytes_ratio = weight_bytes["heterogeneous"] / weight_bytes["stock"]
        for clock, label in (("cpu", "CPU time"), ("wall", "wall-clock time")):
            checks.append(
                Check.at_most(
                    "8",
                    f"{pair.name}: from_pretrained {label} in a fresh process, heterogeneous / stock of the same size",
                    TARGET if clock == "cpu" else None,
                    Stats.of(paired_ratios(times[clock]["heterogeneous"], times[clock]["stock"])),
                    f"stock median {1000 * Stats.of(times[clock]['stock']).median:.0f} ms; weight bytes ratio "
                    f"{bytes_ratio:.3f} ({weight_bytes['stock'] / 1e6:.0f} MB)",
                )
            )
        details[pair.name] = {
            "seconds": times,
            "phases_cpu_ms_median": {
                side: {
                    phase: 1000 * Stats.of([r["phases_cpu_s"][phase] for r in runs[side]]).median
                    for phase in runs[side][0]["phases_cpu_s"]
                }
                for side in runs
            },
            "weight_bytes": weight_bytes,
            "stock_module": pair.stock_module,
            "profile": profile_difference(profiles["heterogeneous"]["profile"], profiles["stock"]["profile"]),
            "profiled_cpu_s": {side: result["cpu_s"] for side, result in profiles.items()},
        }
    return BenchResult(checks, details)


def profile_difference(heterogeneous: dict[str, list[float]], stock: dict[str, list[float]]) -> dict[str, Any]:
    """Where the heterogeneous load spends more CPU than the stock one (cProfile, one load each; `[calls, own
    seconds, cumulative seconds]` per function on both sides): the functions whose cumulative time grew most (what
    calls the extra work), the functions whose own time grew most, and the own time summed per source file. cProfile
    slows Python calls several times over, so these milliseconds rank the causes; they are not the unprofiled gap."""
    functions = heterogeneous.keys() | stock.keys()
    zero = [0, 0.0, 0.0]
    rows = [
        {
            "function": function,
            "extra_cumulative_ms": 1000 * (heterogeneous.get(function, zero)[2] - stock.get(function, zero)[2]),
            "extra_own_ms": 1000 * (heterogeneous.get(function, zero)[1] - stock.get(function, zero)[1]),
            "calls": [heterogeneous.get(function, zero)[0], stock.get(function, zero)[0]],
        }
        for function in functions
    ]
    by_file: dict[str, float] = {}
    for row in rows:
        source = row["function"].rsplit(":", 1)[0]
        by_file[source] = by_file.get(source, 0.0) + row["extra_own_ms"]
    return {
        "by_cumulative_ms": sorted(rows, key=lambda row: -row["extra_cumulative_ms"])[:PROFILE_ROWS],
        "by_own_ms": sorted(rows, key=lambda row: -row["extra_own_ms"])[:PROFILE_ROWS],
        "own_ms_by_file": dict(sorted(by_file.items(), key=lambda item: -item[1])[:PROFILE_ROWS]),
    }


def _profiled_loads(path: Path, stock_module: str) -> dict[str, Any]:
    """The mean of `PROFILED_LOADS` profiled loads in fresh processes: CPU seconds and per-function statistics."""
    runs = [_in_subprocess(path, stock_module, profile=True) for _ in range(PROFILED_LOADS)]
    functions = {function for run in runs for function in run["profile"]}
    zero = [0, 0.0, 0.0]
    return {
        "cpu_s": sum(run["cpu_s"] for run in runs) / len(runs),
        "profile": {
            function: [sum(run["profile"].get(function, zero)[i] for run in runs) / len(runs) for i in range(3)]
            for function in functions
        },
    }


def _in_subprocess(path: Path, stock_module: str, profile: bool = False) -> dict[str, Any]:
    env = fresh_interpreter_env()
    command = [sys.executable, "-m", "benchmarks.load_families", "--worker", str(path), stock_module]
    completed = subprocess.run(
        command + (["--profile"] if profile else []), cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------------
# Worker: runs in its own interpreter


class _PhaseClock:
    """CPU seconds of one load spent reading the config (`PreTrainedConfig.from_dict`), building the model (the stock
    `...ForCausalLM.__init__`, which a family's class inherits) and loading the weights
    (`PreTrainedModel._load_pretrained_model`); the rest of `from_pretrained` is the difference. Instrumentation of
    this worker only: three wrappers, counted at the outermost call."""

    def __init__(self, stock_module: Any) -> None:
        from transformers import PreTrainedConfig, PreTrainedModel

        self.seconds = {"config": 0.0, "construction": 0.0, "weights": 0.0}
        self._depth = dict.fromkeys(self.seconds, 0)
        model_cls = next(
            value
            for name, value in vars(stock_module).items()
            if name.endswith("ForCausalLM") and getattr(value, "__module__", None) == stock_module.__name__
        )
        from_dict = PreTrainedConfig.__dict__["from_dict"].__func__
        PreTrainedConfig.from_dict = classmethod(self._timed("config", from_dict))
        model_cls.__init__ = self._timed("construction", model_cls.__init__)
        load = PreTrainedModel.__dict__["_load_pretrained_model"].__func__
        PreTrainedModel._load_pretrained_model = staticmethod(self._timed("weights", load))

    def _timed(self, phase: str, function: Callable) -> Callable:
        @functools.wraps(function)  # the package reads the signature of some model classes' `__init__`
        def timed_call(*args, **kwargs):
            self._depth[phase] += 1
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[phase] -= 1
                if not self._depth[phase]:
                    self.seconds[phase] += time.process_time() - start

        return timed_call


def worker(path: str, stock_module: str, profile: bool) -> dict[str, Any]:
    import importlib

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    phases = _PhaseClock(importlib.import_module(stock_module))
    logging.disable_progress_bar()
    gc.collect()
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time, as the judged figure
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, output_loading_info=True)
    if profiler is not None:
        profiler.disable()
    result: dict[str, Any] = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    result["phases_cpu_s"] = {**phases.seconds, "other": result["cpu_s"] - sum(phases.seconds.values())}
    problems = {key: value for key, value in info.items() if value and key != "unused_tensors"}
    if problems:
        raise RuntimeError(f"checkpoint did not load cleanly: {problems}")
    result["model_class"] = type(model).__name__
    if profiler is not None:
        result["profile"] = {
            f"{_short_path(filename)}:{line}({name})": [calls, own, cumulative]
            for (filename, line, name), (_, calls, own, cumulative, _) in pstats.Stats(profiler).stats.items()
        }
    return result


def _short_path(filename: str) -> str:
    """`transformers/heterogeneity/modeling_utils.py` rather than the full path of the installation."""
    parts = Path(filename).parts
    for anchor in ("transformers", "torch", "huggingface_hub", "safetensors"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return "/".join(parts[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, required=True, metavar=("DIR", "MODULE"), help="checkpoint, stock module")
    parser.add_argument("--profile", action="store_true", help="run from_pretrained under cProfile")
    arguments = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    print(json.dumps(worker(*arguments.worker, arguments.profile)))


if __name__ == "__main__":
    main()
