"""Runs the benchmarks, prints the table of targets, writes `results.json` and PNG plots.

    python -m benchmarks.run            # full run (about 25 minutes on 2 CPU cores, 20 once the derive parent is
                                        # cached), into benchmarks/results/
    python -m benchmarks.run --quick    # tiny models, a couple of rounds: a smoke test, into benchmarks/results/quick/
    python -m benchmarks.run --only kv_memory load

The table goes to stdout, progress to stderr. The exit status is 0 whether targets hold or not (this measures, it
does not gate) unless `--strict` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/run.py`: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

import torch

import transformers

from .common import Context, configure_threads, format_table, pick_device, timing_dtype


BENCHMARKS = ("overhead", "skips", "kv_memory", "load", "compile", "serving", "derive", "load_families")
TITLES = {
    "overhead": "1. Overhead of per_layer_config that changes nothing structural",
    "skips": "2. Skipped sub-blocks: measured vs predicted time",
    "kv_memory": "3. KV-cache bytes vs the theoretical minimum",
    "load": "4. Loading a sharded bf16 checkpoint: memory and time",
    "compile": "5. torch.compile decode, heterogeneous vs homogeneous of the same FLOPs",
    "serving": "6. Continuous batching: throughput and KV capacity, heterogeneous vs its homogeneous parent",
    "derive": "7. Deriving children from a trained parent: held-out perplexity by init mode, BLD and search",
    "load_families": "8. from_pretrained in a fresh process, each family vs a stock checkpoint of the same size",
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NUMBER_LIST = re.compile(r"\[[\d\s.,eE+-]*\]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Heterogeneous vs stock models, side by side.")
    parser.add_argument("--quick", action="store_true", help="tiny models and few rounds (smoke test)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="benchmarks to run")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: benchmarks/results[/quick]")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch space for checkpoints (default: a tempdir)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def environment(ctx: Context) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu,
        "threads": ctx.threads,
        "device": str(ctx.device) if ctx.device.type != "cuda" else torch.cuda.get_device_name(ctx.device),
        "dtype": str(ctx.dtype),
        "quick": ctx.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat; (0, 0) where unavailable. Steal is the time the
    hypervisor ran other guests on this machine's virtual CPUs: the disturbance that no interleaving can undo."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _compact(value: Any) -> Any:
    """Six significant digits are more than these measurements carry, and keep the committed file small."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compact(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = args.output_dir or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    transformers.utils.logging.disable_progress_bar()  # stderr keeps one line per step
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hetero-bench-", dir=args.workdir) as workdir:
        threads = configure_threads()
        # A cold compiler cache for every run, so that compile times compare like with like (a warm cache from an
        # earlier run would turn a 25 s compile into 8 s).
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(workdir) / "torchinductor"))
        ctx = Context(args.quick, device, timing_dtype(device), workdir=Path(workdir), threads=threads)
        results: dict[str, Any] = {"environment": environment(ctx), "benchmarks": {}, "checks": []}
        checks = []
        ctx.log(f"device {device}, {ctx.threads} threads, {'quick' if args.quick else 'full'} run")
        for name in BENCHMARKS:
            if name not in args.only:
                continue
            module = importlib.import_module(f".{name}", __package__)
            bench_started = time.perf_counter()
            steal_before, total_before = _cpu_times()
            result = module.run(ctx)
            duration = time.perf_counter() - bench_started
            steal_after, total_after = _cpu_times()
            steal = (steal_after - steal_before) / max(1, total_after - total_before)
            ctx.log(f"{name}: done in {duration:.0f} s (CPU steal {steal:.1%})")
            checks.extend(result.checks)
            rows = [check.to_json() for check in result.checks]
            results["benchmarks"][name] = {
                "title": TITLES[name],
                "duration_s": duration,
                "cpu_steal_fraction": steal,
                "checks": rows,
                "details": result.details,
            }
            results["checks"].extend(rows)
    results["runtime_s"] = time.perf_counter() - started

    text = json.dumps(_compact(results), indent=1, default=str)
    text = NUMBER_LIST.sub(lambda match: re.sub(r"\s+", " ", match.group(0)), text)  # one line per list of numbers
    (output_dir / "results.json").write_text(text + "\n")
    from .plots import plot_all

    plots = plot_all(results, output_dir)
    print(format_table(checks))
    held = sum(check.holds is True for check in checks)
    missed = [check for check in checks if check.holds is False]
    print(
        f"\n{held} targets hold, {len(missed)} missed; runtime {results['runtime_s'] / 60:.1f} min "
        f"({results['environment']['device']}, {ctx.threads} threads, {results['environment']['cpu']})."
    )
    steals = ", ".join(f"{name} {bench['cpu_steal_fraction']:.1%}" for name, bench in results["benchmarks"].items())
    print(f"CPU steal (other guests on this machine's CPUs; high values mean disturbed figures): {steals}.")
    print(f"Results: {output_dir / 'results.json'}; plots: {', '.join(str(p.name) for p in plots)}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
