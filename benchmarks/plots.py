"""PNG plots of the results (small files: they are committed and shown in the README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib


matplotlib.use("Agg")  # no display on the machines this runs on

import matplotlib.pyplot as plt


DPI = 90


def plot_all(results: dict[str, Any], output_dir: Path) -> list[Path]:
    """Writes every plot whose benchmark ran; returns the paths written."""
    benchmarks = results["benchmarks"]
    written = []
    for name, plot in (
        ("skips", _plot_skips),
        ("kv_memory", _plot_kv_memory),
        ("load", _plot_load),
    ):
        if name in benchmarks:
            path = output_dir / f"{name}.png"
            plot(benchmarks[name]["details"], path)
            written.append(path)
    path = output_dir / "ratios.png"
    _plot_ratios(results["checks"], path)
    written.append(path)
    return written


def _plot_skips(details: dict[str, Any], path: Path) -> None:
    """Relative time of each variant (full model = 1): predicted from its config vs measured."""
    names = list(details["variants"])
    phases = (("prefill", "prefill", "FLOPs"), ("decode", "decode, DynamicCache", "cost model of stock models"))
    phases += (("decode_static", "decode, StaticCache", "cost model of stock models"),)
    figure, axes = plt.subplots(1, len(phases), figsize=(14, 4), sharey=True)
    for axis, (phase, title, basis) in zip(axes, phases):
        rows = [details["variants"][name][phase] for name in names]
        predicted = [row["predicted_relative_time"] for row in rows]
        measured = [row["measured_relative_time"]["median"] for row in rows]
        low = [m - row["measured_relative_time"]["min"] for m, row in zip(measured, rows)]
        high = [row["measured_relative_time"]["max"] - m for m, row in zip(measured, rows)]
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], predicted, width=0.4, label=f"predicted ({basis})", color="#9ecae1")
        axis.bar(
            [p + 0.2 for p in positions],
            measured,
            width=0.4,
            yerr=[low, high],
            capsize=3,
            label="measured (median, min-max)",
            color="#3182bd",
        )
        labels = [name.replace(" skipped", "\nskipped").replace("-style ", "-style\n") for name in names]
        axis.set_xticks(list(positions), labels, fontsize=7)
        axis.set_title(f"{title}: time relative to the full model", fontsize=9)
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axis.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("time / full-model time")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _plot_kv_memory(details: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, cache in zip(axes, ("DynamicCache", "StaticCache")):
        sample = details["samples"][cache][-1]
        layers = range(len(sample["held_per_layer"]))
        axis.bar([x - 0.2 for x in layers], [b / 1e6 for b in sample["theoretical_per_layer"]], 0.4, label="minimum")
        axis.bar([x + 0.2 for x in layers], [b / 1e6 for b in sample["held_per_layer"]], 0.4, label="held")
        axis.set_title(f"{cache} after {sample['tokens_seen']} tokens", fontsize=9)
        axis.set_xlabel("layer")
        axis.set_ylabel("MB")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _plot_load(details: dict[str, Any], path: Path) -> None:
    """RSS above the interpreter baseline during the first load of each checkpoint."""
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, color in (("heterogeneous", "#3182bd"), ("homogeneous", "#e6550d")):
        run = details["runs"][name][0]
        trace = run["trace"]
        gigabytes = 1e9
        axis.plot(
            [t for t, *_ in trace],
            [(rss - run["baseline_rss"]) / gigabytes for _, rss, _, _ in trace],
            color=color,
            label=f"{name}: RSS",
        )
        axis.plot(
            [t for t, *_ in trace],
            [(anon - run["baseline_anon"]) / gigabytes for _, _, anon, _ in trace],
            color=color,
            linestyle="--",
            label=f"{name}: anonymous",
        )
        axis.axhline(run["weight_bytes"] / gigabytes, color=color, linewidth=0.8, linestyle=":")
        axis.axvline(run["load_s"], color=color, linewidth=0.8, linestyle="-.")
    axis.set_xlabel("seconds (dash-dot: from_pretrained returns; then every weight is read once)", fontsize=8)
    axis.set_ylabel("GB above baseline")
    axis.set_title("Memory while loading (dotted: weight bytes)", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _plot_ratios(checks: list[dict[str, Any]], path: Path) -> None:
    """Every ratio with a numeric target: median with min-max whiskers, and the target."""
    rows = [check for check in checks if check["stats"] is not None and check["kind"] == "max"]
    if not rows:
        return
    figure, axis = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    for y, check in enumerate(rows):
        stats = check["stats"]
        color = "#31a354" if check["holds"] else "#de2d26"
        axis.errorbar(
            stats["median"],
            y,
            xerr=[[stats["median"] - stats["min"]], [stats["max"] - stats["median"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
        axis.plot([check["limit"]], [y], marker="|", color="black", markersize=12)
    axis.set_yticks(range(len(rows)), [f"{c['item']}. {c['name']}" for c in rows], fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("ratio (black bar: target; green holds, red misses)")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
