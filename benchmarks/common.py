"""Shared pieces of the benchmarks: timing and statistics, model construction, and a FLOP/byte cost model.

Every benchmark reports ratios of two measurements taken side by side in one run: the machines this runs on are
shared and noisy, so absolute times say little, while a ratio of interleaved measurements (A, B, B, A, A, B, ...)
cancels most of the drift. Each ratio is reported as min / median / max over the rounds; a target is judged on the
median.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transformers import AutoModelForCausalLM, Cache, LlamaConfig, PreTrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights


# ----------------------------------------------------------------------------------------------------------------------
# Environment


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA where present, else CPU: the same script measures both."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def timing_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are emulated and slow on CPUs without AMX/AVX512-BF16, which would distort every
    FLOP-based prediction); bf16 on GPU, where it is the dtype models run in."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def configure_threads() -> int:
    """Uses every core this process may run on; returns the count (recorded with the results)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cores)
    return cores


def sync(device: torch.device) -> None:
    """Waits for queued kernels, so that a wall-clock interval covers the work it claims to (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REPO_ROOT = Path(__file__).resolve().parent.parent


def fresh_interpreter_env() -> dict[str, str]:
    """The environment for a fresh interpreter that runs the way a user's does: the repository importable, and Python
    bytecode cached. Some machines set `PYTHONDONTWRITEBYTECODE`, which makes every fresh process compile anew each
    module without a cached `.pyc` (this repository's modules; pip installs the others compiled), a cost that users do
    not pay. Run a warm-up process first: it writes the cache (`__pycache__/`, ignored by git)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


@dataclass
class Context:
    """What every benchmark gets: the mode, where to compute, and a scratch directory for checkpoints."""

    quick: bool
    device: torch.device
    dtype: torch.dtype
    workdir: Path
    threads: int

    def log(self, message: str) -> None:
        """Progress goes to stderr, so that stdout holds only the results table."""
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class BenchResult:
    """Rows for the table, and everything else worth keeping (absolute times, per-layer bytes, traces) for the
    JSON file and the plots."""

    checks: list[Check]
    details: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------------------
# Statistics and checks


@dataclass
class Stats:
    """min / median / max of repeated measurements (or of per-round ratios)."""

    min: float
    median: float
    max: float
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        values = [float(value) for value in values]
        return cls(min(values), statistics.median(values), max(values), values)


@dataclass
class Check:
    """One row of the results table: a measured figure against its target.

    `kind` is `"max"` (the median must not exceed `limit`), `"equal"` (every measurement must equal `limit`
    exactly) or `"info"` (reported, no target).
    """

    item: str
    name: str
    target: str
    kind: str
    limit: float | None
    stats: Stats | None
    detail: str = ""
    holds: bool | None = None

    def __post_init__(self) -> None:
        if self.stats is None or self.kind == "info":
            self.holds = None
        elif self.kind == "max":
            self.holds = self.stats.median <= self.limit
        elif self.kind == "equal":
            self.holds = self.stats.min == self.limit == self.stats.max
        else:
            raise ValueError(f"unknown check kind {self.kind!r}")

    @classmethod
    def at_most(cls, item: str, name: str, limit: float | None, stats: Stats, detail: str = "") -> Check:
        """A figure that must not exceed `limit`; with `limit=None`, the same figure reported without a target."""
        if limit is None:
            return cls.info(item, name, stats, detail)
        return cls(item, name, f"<= {limit}", "max", limit, stats, detail)

    @classmethod
    def equals_one(cls, item: str, name: str, stats: Stats, detail: str = "") -> Check:
        """A ratio that every measurement must hit exactly."""
        return cls(item, name, "== 1", "equal", 1.0, stats, detail)

    @classmethod
    def info(cls, item: str, name: str, stats: Stats | None = None, detail: str = "") -> Check:
        """A figure reported for context, with no target."""
        return cls(item, name, "-", "info", None, stats, detail)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def interleave(cases: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[Any]]:
    """Runs every case once per round, alternating the order (A B, B A, A B, ...) so that neither case always runs
    right after the other: slow drift of the machine (other tenants, thermal state, page cache) then hits both cases
    alike. Each case measures itself and returns its measurement. Warm-up rounds are run and discarded."""
    names = list(cases)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_idx in range(warmup + rounds):
        order = names if round_idx % 2 == 0 else names[::-1]
        for name in order:
            value = cases[name]()
            if round_idx >= warmup:
                results[name].append(value)
    return results


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float], scale: float = 1.0) -> list[float]:
    """Per-round ratios `numerator / denominator / scale`: each pair was measured back to back."""
    return [n / d / scale for n, d in zip(numerators, denominators)]


def timed(function: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    function()
    sync(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------------------
# Models


def llama_config(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    vocab_size: int = 32000,
    per_layer_config: dict[int, dict[str, Any]] | None = None,
    **kwargs: Any,
) -> LlamaConfig:
    """A Llama config (the reference architecture of the package); `per_layer_config=None` is stock and
    homogeneous."""
    if per_layer_config is not None:
        kwargs["per_layer_config"] = per_layer_config
    return LlamaConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=4096,
        **kwargs,
    )


def every_nth(num_layers: int, fraction: float) -> list[int]:
    """`fraction` of the layers, spread evenly and never the first layer (pruning keeps the first layers)."""
    count = round(num_layers * fraction)
    return [num_layers - 1 - math.floor(i * num_layers / count) for i in range(count)] if count else []


def nemotron_nas_style(config: LlamaConfig) -> dict[int, dict[str, Any]]:
    """A per-layer mix shaped like the Nemotron-NAS (DeciLM) models: FFN widths from 1/4 to the full width, fewer KV
    heads (1/2 and 1/4 of them) in two layers of three, attention skipped in one layer of six and the MLP in two
    layers. Scales with the number of layers."""
    num_layers = config.num_hidden_layers
    widths = (1.0, 0.5, 0.75, 0.25, 1.0, 0.5)
    kv_heads = (config.num_key_value_heads, config.num_key_value_heads // 2, config.num_key_value_heads // 4)
    skip_attention = set(every_nth(num_layers, 4 / 24))
    skip_mlp = {num_layers // 3, (2 * num_layers) // 3} - skip_attention
    per_layer: dict[int, dict[str, Any]] = {}
    for layer_idx in range(num_layers):
        overrides: dict[str, Any] = {}
        width = _round_to(config.intermediate_size * widths[layer_idx % len(widths)], 64)
        if width != config.intermediate_size:
            overrides["intermediate_size"] = width
        kv = max(1, kv_heads[layer_idx % 3])
        if kv != config.num_key_value_heads:
            overrides["num_key_value_heads"] = kv
        skips = [name for name, where in (("attention", skip_attention), ("mlp", skip_mlp)) if layer_idx in where]
        if skips:
            overrides["skip"] = skips
        if overrides:
            per_layer[layer_idx] = overrides
    return per_layer


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def build_model(config: PreTrainedConfig, dtype: torch.dtype, device: torch.device, seed: int = 0) -> PreTrainedModel:
    """Builds `AutoModelForCausalLM.from_config(config)` with random weights, fast.

    Stock initialisation draws every weight from a normal distribution, which takes ~13 s for 0.4 B parameters on
    two cores; the timing benchmarks need many models, so construction skips it (`no_init_weights`) and fills the
    weights by tiling a small pool of N(0, 0.02) samples (memory-bound copies). The values are as realistic for
    timing as a fresh draw: no zeros, no denormals. Norm weights are ones, as stock initialisation makes them.
    Buffers (rotary frequencies) are computed in the constructors as usual."""
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    fill_random_(model, seed)
    return model.to(device).eval()


def build_sharing_weights(config: PreTrainedConfig, donor: PreTrainedModel) -> PreTrainedModel:
    """Builds `config`'s model on the donor's weights: every tensor is the donor's tensor (or its leading slice,
    e.g. the first rows of a wider FFN), not a copy.

    Timing two models whose weights live in different memory compares their memory placement too (transparent huge
    pages, NUMA, fragmentation), which moves per-token times by a few per cent, as much as the effects measured
    here. Sharing the donor's memory leaves only the computation to compare. The one slice that is not contiguous
    (the input columns of a narrower `down_proj`) is copied, as a contiguous weight would be in a real model.
    """
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=donor.dtype)
    donor_state = donor.state_dict()
    state = {}
    for name, tensor in model.state_dict().items():
        source = donor_state[name]
        if source.shape != tensor.shape:
            source = source[tuple(slice(0, size) for size in tensor.shape)]
            if not source.is_contiguous():
                source = source.contiguous()
        state[name] = source
    model.load_state_dict(state, assign=True, strict=True)
    return model.to(donor.device).eval()


def fill_random_(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 21, generator=generator) * 0.02
    with torch.no_grad():
        for index, parameter in enumerate(model.parameters()):
            if parameter.dim() == 1:
                parameter.fill_(1.0)
                continue
            flat = parameter.view(-1)
            source = pool.to(parameter.dtype).roll(index * 7919)
            for start in range(0, flat.numel(), source.numel()):
                chunk = flat[start : start + source.numel()]
                chunk.copy_(source[: chunk.numel()])


# ----------------------------------------------------------------------------------------------------------------------
# Cost model


@dataclass(frozen=True)
class LayerShape:
    """What one decoder layer computes: `None`/0 for a skipped sub-block."""

    attention: bool
    mlp: bool
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    window: int | None = None  # sliding window (Mistral-style configs without `layer_types`)


def layer_shapes(config: PreTrainedConfig) -> list[LayerShape]:
    """Every layer's shape from upstream's per-layer config view (`config.per_layer_config[i]`), independent of this
    package's modeling code, so that a prediction from it is a check on what the package builds."""
    shapes = []
    for layer_idx in range(config.num_hidden_layers):
        layer = config.per_layer_config[layer_idx]
        skips = getattr(layer, "skip", None) or []
        heads = layer.num_attention_heads
        shapes.append(
            LayerShape(
                attention="attention" not in skips,
                mlp="mlp" not in skips,
                num_heads=heads,
                num_kv_heads=getattr(layer, "num_key_value_heads", None) or heads,
                head_dim=getattr(layer, "head_dim", None) or config.hidden_size // heads,
                intermediate_size=layer.intermediate_size,
                window=getattr(layer, "sliding_window", None),
            )
        )
    return shapes


def layer_parameters(shape: LayerShape, hidden_size: int) -> int:
    """Parameters of one Llama-family layer without biases: q, k, v, o, the input norm, gate/up/down, the
    post-attention norm. A skipped sub-block takes its norm with it."""
    count = 0
    if shape.attention:
        count += hidden_size * shape.head_dim * (2 * shape.num_heads + 2 * shape.num_kv_heads) + hidden_size
    if shape.mlp:
        count += 3 * hidden_size * shape.intermediate_size + hidden_size
    return count


def model_parameters(config: PreTrainedConfig) -> int:
    layers = sum(layer_parameters(shape, config.hidden_size) for shape in layer_shapes(config))
    embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    return layers + embeddings + config.hidden_size


def same_size_ffn_width(sizes: dict[str, int], parameters: int) -> int:
    """The homogeneous FFN width (a multiple of 16) whose Llama of `sizes` (the arguments of `llama_config`) has the
    parameter count closest to `parameters`: the stock model of the same size as a heterogeneous one."""
    per_unit = 3 * sizes["hidden_size"] * sizes["num_layers"]  # parameters per unit of intermediate_size
    zero_width = model_parameters(llama_config(**{**sizes, "intermediate_size": 0}))
    return max(16, round((parameters - zero_width) / per_unit / 16) * 16)


def check_parameter_count(model: nn.Module, config: PreTrainedConfig) -> None:
    """The cost model must describe the model that was built; a mismatch would make every prediction wrong."""
    built = sum(parameter.numel() for parameter in model.parameters())
    expected = model_parameters(config)
    if built != expected:
        raise AssertionError(f"cost model expects {expected:,} parameters, the model has {built:,}")


def forward_flops(config: PreTrainedConfig, new_tokens: int, past_tokens: int = 0, kept_logits: int = 1) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward over `new_tokens` after `past_tokens` cached ones: projections,
    causal attention scores and values, MLP, and the LM head over `kept_logits` positions. Norms, rotary and
    element-wise work are left out (a few per cent at most, and they scale with the same sub-blocks)."""
    hidden = config.hidden_size
    attended = new_tokens * past_tokens + new_tokens * (new_tokens + 1) / 2  # causal: token t sees past + t keys
    flops = 2.0 * kept_logits * hidden * config.vocab_size
    for shape in layer_shapes(config):
        if shape.attention:
            projections = hidden * shape.head_dim * (2 * shape.num_heads + 2 * shape.num_kv_heads)
            flops += 2.0 * new_tokens * projections + 4.0 * shape.num_heads * shape.head_dim * attended
        if shape.mlp:
            flops += 2.0 * new_tokens * 3 * hidden * shape.intermediate_size
    return flops


def decode_bytes(config: PreTrainedConfig, past_tokens: int, element_size: int) -> float:
    """Bytes one decode step must read: every layer weight, the LM head, one embedding row, and the KV cache of the
    layers that hold one. On CPU, and on GPU at batch 1, decode is bound by these reads, not by FLOPs."""
    hidden = config.hidden_size
    total = sum(layer_parameters(shape, hidden) for shape in layer_shapes(config))
    total += config.vocab_size * hidden + 2 * hidden  # LM head, one embedding row, final norm
    for shape in layer_shapes(config):
        if shape.attention:
            total += 2 * shape.num_kv_heads * shape.head_dim * (past_tokens + 1)
    return float(total * element_size)


# ----------------------------------------------------------------------------------------------------------------------
# Forward passes


class Decoder:
    """Greedy decoding of one model one step at a time, so that several models can take turns step by step.

    Interleaving single steps (A, B, B, A, ...) pairs measurements taken within a fraction of a second of each
    other; on a machine whose speed drifts by tens of per cent over seconds, that is what makes a ratio of
    per-token times precise. `cache=None` lets the model make its default cache at each prefill (a `DynamicCache`,
    as `generate` does); a given cache (e.g. a `StaticCache`) is reset in place and reused, which compiled code
    needs. `forward` defaults to the model itself (e.g. pass a compiled `model.forward`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        device: torch.device,
        cache: Cache | None = None,
        forward: Callable[..., Any] | None = None,
    ) -> None:
        self.model, self.input_ids, self.device = model, input_ids, device
        self.given_cache = cache
        self.forward = forward or model
        self.cache: Cache | None = None
        self.token: torch.Tensor | None = None
        self.position = 0

    @torch.inference_mode()
    def prefill(self) -> float:
        """Runs the prompt into a fresh (or reset) cache, with `logits_to_keep=1` as `generate` does; returns the
        seconds it took."""
        if self.given_cache is not None:
            self.given_cache.reset()
        sync(self.device)
        start = time.perf_counter()
        output = self.model(self.input_ids, past_key_values=self.given_cache, use_cache=True, logits_to_keep=1)
        sync(self.device)
        seconds = time.perf_counter() - start
        self.cache = output.past_key_values
        self.token = output.logits[:, -1:].argmax(-1)
        self.position = self.input_ids.shape[1]
        return seconds

    @torch.inference_mode()
    def step(self) -> float:
        """One greedy decode step; returns the seconds it took."""
        if self.cache is None:
            self.prefill()
        position_ids = torch.tensor([[self.position]], device=self.device)
        sync(self.device)
        start = time.perf_counter()
        output = self.forward(self.token, past_key_values=self.cache, position_ids=position_ids, use_cache=True)
        self.token = output.logits[:, -1:].argmax(-1)
        sync(self.device)
        self.position += 1
        return time.perf_counter() - start


def random_tokens(batch: int, length: int, vocab_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=generator).to(device)


# ----------------------------------------------------------------------------------------------------------------------
# Output


def format_table(checks: Sequence[Check]) -> str:
    """One row per check: item, measurement, target, min / median / max, whether the target holds, and the
    absolute figures behind the ratio."""
    header = ["#", "measurement", "target", "min", "median", "max", "holds", "detail"]
    rows = []
    for check in checks:
        if check.stats is None:
            numbers = ["-", "-", "-"]
        else:
            numbers = [_format_value(v) for v in (check.stats.min, check.stats.median, check.stats.max)]
        holds = {True: "yes", False: "NO", None: "-"}[check.holds]
        rows.append([check.item, check.name, check.target, *numbers, holds, check.detail])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2, 7}
    lines = [
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def _format_value(value: float) -> str:
    if value == int(value) and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.3f}"
