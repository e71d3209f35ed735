"""A decode cost model fitted on stock (homogeneous) models only: a fixed cost per attention and per MLP sub-block,
a fixed cost per step and per layer, plus a cost per byte read.

Bytes read predict decode time only where time is proportional to them. A decode step also does work that does not
scale with the weights: rotary, the KV-cache update, the attention kernel's own overhead, norms, and Python dispatch
of every module. Removing an MLP removes its bytes but little of that, so a variant with skipped MLPs is slower than
its bytes predict, whatever code runs it. The model here prices that work, and is fitted on stock models only, so that
it is a reference the heterogeneous models are judged against rather than a description of them:

    step = fixed + per_layer * layers + per_attention * attention sub-blocks + per_mlp * MLP sub-blocks
           + per_byte * (attention bytes + MLP bytes)

Attention and MLP sub-blocks always come in pairs in a stock model, so their fixed costs cannot be told apart from
whole-model times alone. They are timed inside the stock models instead: forward hooks measure each layer's attention
sub-block (from its input norm to the end of the attention module) and MLP sub-block (from its norm to the end of the
MLP) during extra decode steps, and the rest of the step (embedding, final norm, LM head, per-layer residual adds and
dispatch) is the unhooked step time minus the sub-blocks. One least-squares fit over all the stock models then gives
the six coefficients. Attention bytes are the layer's attention weights and the KV cache it reads; MLP bytes its MLP
weights; the LM head and embedding are the same for every model and sit in `fixed`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transformers import PreTrainedConfig

from .common import Decoder, Stats, interleave, layer_shapes, sync


@dataclass(frozen=True)
class SubBlockBytes:
    """What a config's layers hold: sub-block counts and the bytes one decode step reads in them."""

    layers: int
    attention: int
    mlp: int
    attention_bytes: float
    mlp_bytes: float

    @classmethod
    def of(cls, config: PreTrainedConfig, past_tokens: int, element_size: int) -> SubBlockBytes:
        """After `past_tokens` cached tokens: attention weights (q, k, v, o, input norm) plus the KV cache read (and the
        token written), MLP weights (gate, up, down, norm); a skipped sub-block counts nothing."""
        hidden = config.hidden_size
        attention = mlp = 0
        attention_bytes = mlp_bytes = 0.0
        for shape in layer_shapes(config):
            if shape.attention:
                attention += 1
                weights = hidden * shape.head_dim * (2 * shape.num_heads + 2 * shape.num_kv_heads) + hidden
                attention_bytes += (
                    weights + 2 * shape.num_kv_heads * shape.head_dim * (past_tokens + 1)
                ) * element_size
            if shape.mlp:
                mlp += 1
                mlp_bytes += (3 * hidden * shape.intermediate_size + hidden) * element_size
        return cls(config.num_hidden_layers, attention, mlp, attention_bytes, mlp_bytes)


@dataclass(frozen=True)
class DecodeCostModel:
    """Milliseconds of one decode step, from `SubBlockBytes`."""

    fixed_ms: float
    per_layer_ms: float
    per_attention_ms: float
    per_mlp_ms: float
    per_gb_ms: float

    def predict_ms(self, blocks: SubBlockBytes) -> float:
        return (
            self.fixed_ms
            + self.per_layer_ms * blocks.layers
            + self.per_attention_ms * blocks.attention
            + self.per_mlp_ms * blocks.mlp
            + self.per_gb_ms * (blocks.attention_bytes + blocks.mlp_bytes) / 1e9
        )

    @classmethod
    def fit(cls, observations: list[tuple[SubBlockBytes, dict[str, float]]]) -> tuple[DecodeCostModel, float]:
        """Least squares over stock models. Each observation is a model's `SubBlockBytes` and its measured
        milliseconds per step: `attention` and `mlp` (all its sub-blocks of that kind) and `rest` (the step minus
        both). Returns the model and the largest residual in milliseconds."""
        rows, targets = [], []
        for blocks, times in observations:
            #           fixed  per_layer      per_attention     per_mlp      per_gb
            rows.append([0.0, 0.0, blocks.attention, 0.0, blocks.attention_bytes / 1e9])
            targets.append(times["attention"])
            rows.append([0.0, 0.0, 0.0, blocks.mlp, blocks.mlp_bytes / 1e9])
            targets.append(times["mlp"])
            rows.append([1.0, blocks.layers, 0.0, 0.0, 0.0])
            targets.append(times["rest"])
        matrix, target = np.array(rows), np.array(targets)
        if np.linalg.matrix_rank(matrix) < matrix.shape[1]:
            raise ValueError("the stock models do not determine the cost model: vary depth, FFN width and KV heads")
        coefficients, *_ = np.linalg.lstsq(matrix, target, rcond=None)
        residual = float(np.abs(matrix @ coefficients - target).max())
        return cls(*(float(value) for value in coefficients)), residual

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SubBlockTimer:
    """Forward hooks that add up, per forward, the time of each Llama-family layer's attention sub-block (input norm
    to the end of `self_attn`) and MLP sub-block (post-attention norm to the end of `mlp`). The device is synchronised
    at both ends, so on a GPU the hooked steps are slower than unhooked ones; only their split is used."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds = {"attention": 0.0, "mlp": 0.0}
        self._started: dict[str, float] = {}
        self._handles = []
        for layer in model.model.layers:
            for kind, norm, block in (
                ("attention", layer.input_layernorm, layer.self_attn),
                ("mlp", layer.post_attention_layernorm, layer.mlp),
            ):
                self._handles.append(norm.register_forward_pre_hook(functools.partial(self._begin, kind)))
                self._handles.append(block.register_forward_hook(functools.partial(self._end, kind)))

    def _begin(self, kind: str, module: nn.Module, args: tuple) -> None:
        sync(self.device)
        self._started[kind] = time.perf_counter()

    def _end(self, kind: str, module: nn.Module, args: tuple, output: Any) -> None:
        sync(self.device)
        self.seconds[kind] += time.perf_counter() - self._started.pop(kind)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def time_sub_blocks(models: dict[str, tuple[Decoder, nn.Module]], steps: int) -> dict[str, dict[str, Stats]]:
    """Milliseconds per decode step spent in the attention and MLP sub-blocks of stock models, over `steps` hooked
    steps of each model's decoder (prefilled first), the models taking turns as in the timed runs (`interleave`), so
    that a disturbance of the machine does not fall on one model only."""
    timers = {}
    for name, (decoder, model) in models.items():
        decoder.prefill()
        timers[name] = SubBlockTimer(model, decoder.device)

    def hooked_step(name: str) -> dict[str, float]:
        timers[name].seconds = {"attention": 0.0, "mlp": 0.0}
        models[name][0].step()
        return {kind: 1000 * seconds for kind, seconds in timers[name].seconds.items()}

    try:
        per_step = interleave({name: functools.partial(hooked_step, name) for name in models}, rounds=steps)
    finally:
        for timer in timers.values():
            timer.remove()
    return {
        name: {kind: Stats.of([step[kind] for step in steps_of]) for kind in ("attention", "mlp")}
        for name, steps_of in per_step.items()
    }
