"""Item 4: loading a sharded heterogeneous checkpoint costs what loading its weights costs.

Two bf16 checkpoints of the same size are saved in shards: a Nemotron-NAS-style heterogeneous model and a stock
homogeneous Llama whose FFN width is chosen to match its weight bytes. Each load runs in a fresh interpreter
(`python -m benchmarks.load --worker DIR`), heterogeneous and homogeneous alternating, so that nothing a previous
load left in the allocator counts. The worker measures, around `AutoModelForCausalLM.from_pretrained` alone:

- the time of `from_pretrained`, and of reading every weight once afterwards (what the first forward does: the
  shards are memory-mapped and the weights can stay backed by the mapping, so `from_pretrained` may return before
  it has read them). The judged figure is the CPU time of `from_pretrained` (all the process's threads but the
  memory poller below), which on a shared VM varies far less than its wall-clock time (reported beside it);
- the peak resident set size above the interpreter's baseline, over `from_pretrained` and that first read (torch and Transformers imported, the Llama modeling
  module too), from the kernel's high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` right before the
  load), plus a trace of `/proc/self/status` polled every few milliseconds that splits the RSS into anonymous memory
  and file pages (mapped safetensors shards count in the RSS while they are mapped).

Both checkpoints are read from the page cache (they were just written): this measures the loader, not the disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

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


RSS_TARGET = 1.2
TIME_TARGET = 1.02


def configs(quick: bool) -> tuple[Any, Any, str]:
    """(heterogeneous, homogeneous of the same weight bytes, shard size)."""
    if quick:
        sizes = {"hidden_size": 256, "num_layers": 8, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 1024}
        sizes["vocab_size"] = 1000
        shard = "2MB"
    else:  # about 2.9 GB in bf16, in 1 GB shards
        sizes = {"hidden_size": 2048, "num_layers": 32, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 8192}
        shard = "1GB"
    heterogeneous = llama_config(**sizes, per_layer_config=nemotron_nas_style(llama_config(**sizes)))
    width = same_size_ffn_width(sizes, model_parameters(heterogeneous))
    homogeneous = llama_config(**{**sizes, "intermediate_size": width})
    return heterogeneous, homogeneous, shard


def run(ctx: Context) -> BenchResult:
    heterogeneous, homogeneous, shard = configs(ctx.quick)
    rounds = 2 if ctx.quick else 4
    paths = {"heterogeneous": ctx.workdir / "load-heterogeneous", "homogeneous": ctx.workdir / "load-homogeneous"}
    for seed, (name, config) in enumerate((("heterogeneous", heterogeneous), ("homogeneous", homogeneous))):
        ctx.log(f"load: saving the {name} checkpoint ({model_parameters(config) * 2 / 1e9:.2f} GB bf16)")
        model = build_model(config, torch.bfloat16, torch.device("cpu"), seed=seed)
        model.save_pretrained(paths[name], max_shard_size=shard)
        del model
        gc.collect()

    ctx.log(f"load: {rounds} rounds of fresh-process loads")
    results = interleave({name: lambda p=path: _load_in_subprocess(p) for name, path in paths.items()}, rounds)
    for path in paths.values():
        shutil.rmtree(path)

    checks = []
    for name in ("heterogeneous", "homogeneous"):
        runs = results[name]
        fractions = [(r["peak_rss"] - r["baseline_rss"]) / r["weight_bytes"] for r in runs]
        anon = Stats.of([(r["peak_anon"] - r["baseline_anon"]) / r["weight_bytes"] for r in runs]).median
        lazy = [
            (r["peak_rss_from_pretrained"] - r["baseline_rss"]) / r["weight_bytes"]
            for r in runs
            if r["peak_rss_from_pretrained"] is not None
        ]
        lazy_text = f"; from_pretrained alone x{Stats.of(lazy).median:.2f}" if lazy else ""
        checks.append(
            Check.at_most(
                "4",
                f"peak RSS above baseline / weight bytes, {name}",
                RSS_TARGET if name == "heterogeneous" else None,
                Stats.of(fractions),
                f"{runs[0]['weight_bytes'] / 1e9:.2f} GB, {runs[0]['shards']} shards; anonymous x{anon:.2f}"
                + lazy_text,
            )
        )
    bytes_ratio = results["heterogeneous"][0]["weight_bytes"] / results["homogeneous"][0]["weight_bytes"]
    for keys, label, kind in (
        (("load_cpu_s",), "from_pretrained CPU", "max"),
        (("load_s",), "from_pretrained wall-clock", "info"),
        (("load_s", "touch_s"), "from_pretrained + first read of the weights, wall-clock", "info"),
    ):
        times = {name: [sum(r[key] for key in keys) for r in values] for name, values in results.items()}
        checks.append(
            Check.at_most(
                "4",
                f"{label} time per weight byte, heterogeneous / stock",
                TIME_TARGET if kind == "max" else None,
                Stats.of(paired_ratios(times["heterogeneous"], times["homogeneous"], scale=bytes_ratio)),
                f"stock median {Stats.of(times['homogeneous']).median:.2f} s; bytes ratio {bytes_ratio:.4f}",
            )
        )
    details = {
        "heterogeneous_per_layer_config": {str(k): v for k, v in heterogeneous.to_dict()["per_layer_config"].items()},
        "homogeneous_intermediate_size": homogeneous.intermediate_size,
        "max_shard_size": shard,
        "runs": results,
    }
    return BenchResult(checks, details)


def _load_in_subprocess(path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", "--worker", str(path)],
        cwd=REPO_ROOT,
        env=fresh_interpreter_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------------
# Worker: runs in its own interpreter


def _status() -> dict[str, int]:
    """Memory fields of /proc/self/status, in bytes."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


class _Poller(threading.Thread):
    """Samples the RSS every few milliseconds (anonymous and file pages apart), for the trace and the split."""

    def __init__(self, interval: float = 0.003) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, int, int]] = []
        self.stopped = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.stopped.is_set():
            fields = _status()
            self.samples.append(
                (time.perf_counter() - self.start_time, fields["VmRSS"], fields["RssAnon"], fields["RssFile"])
            )
            time.sleep(self.interval)


def worker(path: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM
    from transformers.models.llama import modeling_llama  # noqa: F401  (imported before the baseline)

    gc.collect()
    baseline = _status()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    poller = _Poller()
    poller.start()
    # CPU time of the process (the loader's threads included) less the poller's own.
    poller_clock = time.pthread_getcpuclockid(poller.ident)
    cpu, poller_cpu, start = time.process_time(), time.clock_gettime(poller_clock), time.perf_counter()
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, output_loading_info=True)
    load_s = time.perf_counter() - start
    load_cpu_s = time.process_time() - cpu - (time.clock_gettime(poller_clock) - poller_cpu)
    loaded = _status()
    # Safetensors shards are memory-mapped and the weights may stay backed by the mapping, so `from_pretrained` can
    # return before reading them; the first forward reads them all. Read every weight once, as it would.
    start = time.perf_counter()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sum()
    touch_s = time.perf_counter() - start
    poller.stopped.set()
    poller.join()
    after = _status()
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise RuntimeError(f"checkpoint did not load cleanly: {problems}")
    storages = {p.untyped_storage().data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    samples = poller.samples
    step = max(1, len(samples) // 120)
    return {
        "path": path,
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "touch_s": touch_s,
        "peak_rss_from_pretrained": loaded["VmHWM"] if hwm_reset else None,
        "anon_after_from_pretrained": loaded["RssAnon"],
        "file_after_from_pretrained": loaded["RssFile"],
        "weight_bytes": sum(storages.values()),
        "shards": len(list(Path(path).glob("*.safetensors"))),
        "baseline_rss": baseline["VmRSS"],
        "baseline_anon": baseline["RssAnon"],
        "peak_rss": max([after["VmHWM"] if hwm_reset else 0] + [s[1] for s in samples]),
        "peak_anon": max([after["RssAnon"]] + [s[2] for s in samples]),
        "peak_file": max([after["RssFile"]] + [s[3] for s in samples]),
        "final_rss": after["VmRSS"],
        "final_anon": after["RssAnon"],
        "final_file": after["RssFile"],
        "hwm_reset": hwm_reset,
        "trace": [list(sample) for sample in samples[::step]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, help="checkpoint directory to load and measure")
    arguments = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    print(json.dumps(worker(arguments.worker)))


if __name__ == "__main__":
    main()
