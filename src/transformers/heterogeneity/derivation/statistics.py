# Copyright 2026 The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Activation statistics of the parent on calibration data, gathered in one pass by forward hooks.

Only what the planned init modes read is gathered, and only for the layers that need it:

- `ffn`: per FFN channel, the mean absolute value of the output projection's input (`channel_importance`);
- `heads`: per query head, the mean L2 norm of what the head adds to the residual stream (`head_importance`);
- `least_squares`: per sub-block to be replaced by a linear map, `X^T X` and `X^T Y` of its input and output;
- `experts`: per expert, how many calibration tokens the router sends to it.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from .calibration import CalibrationData


__all__ = ["ActivationStatistics", "StatisticsRequest", "collect_statistics"]

# Tokens per chunk when splitting head contributions, which are `[tokens, heads, hidden]` at once.
_HEAD_CHUNK = 256


@dataclass
class StatisticsRequest:
    """Which statistic each sub-block needs: the modules to hook, keyed by (layer, slot), by statistic."""

    ffn: dict[tuple[int, str], nn.Module] = field(default_factory=dict)  # the output projection
    heads: dict[tuple[int, str], tuple[nn.Module, int]] = field(default_factory=dict)  # (o_proj, head_dim)
    least_squares: dict[tuple[int, str], nn.Module] = field(default_factory=dict)  # the sub-block
    experts: dict[tuple[int, str], tuple[nn.Module, int]] = field(default_factory=dict)  # (router, experts per token)

    def __bool__(self) -> bool:
        return bool(self.ffn or self.heads or self.least_squares or self.experts)


@dataclass
class ActivationStatistics:
    """The gathered statistics, keyed by `(layer_idx, slot)`."""

    ffn: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    heads: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    least_squares: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    experts: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    num_tokens: int = 0


@torch.no_grad()
def collect_statistics(model: nn.Module, request: StatisticsRequest, data: CalibrationData) -> ActivationStatistics:
    """Runs `model` over `data` once with hooks that accumulate what `request` asks for."""
    sums: dict[str, dict] = defaultdict(dict)
    handles = []
    for key, projection in request.ffn.items():
        handles.append(projection.register_forward_pre_hook(_accumulate_abs(sums["ffn"], key)))
    for key, (projection, head_dim) in request.heads.items():
        handles.append(projection.register_forward_pre_hook(_accumulate_heads(sums["heads"], key, head_dim)))
    for key, module in request.least_squares.items():
        pending: dict[str, torch.Tensor] = {}
        handles.append(module.register_forward_pre_hook(_remember_input(pending), with_kwargs=True))
        handles.append(module.register_forward_hook(_accumulate_products(sums["least_squares"], key, pending)))
    for key, (router, top_k) in request.experts.items():
        handles.append(router.register_forward_pre_hook(_count_routes(sums["experts"], key, top_k)))
    statistics = ActivationStatistics()
    try:
        for batch in data.batches():
            model(input_ids=batch.to(model.device), use_cache=False)
            statistics.num_tokens += batch.numel()
    finally:
        for handle in handles:
            handle.remove()
    tokens = statistics.num_tokens
    statistics.ffn = {key: total / tokens for key, total in sums["ffn"].items()}
    statistics.heads = {key: total / tokens for key, total in sums["heads"].items()}
    statistics.least_squares = dict(sums["least_squares"])
    statistics.experts = dict(sums["experts"])
    return statistics


def _tokens(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1, tensor.shape[-1])


def _add(sums: dict, key, value) -> None:
    sums[key] = value if key not in sums else sums[key] + value


def _accumulate_abs(sums: dict, key):
    def hook(module, args):
        _add(sums, key, _tokens(args[0]).double().abs().sum(dim=0))

    return hook


def _accumulate_heads(sums: dict, key, head_dim: int):
    def hook(module, args):
        outputs = _tokens(args[0])  # [tokens, heads * head_dim]: each head's attention output, side by side
        weight = module.weight.double().reshape(module.out_features, -1, head_dim)  # [hidden, heads, head_dim]
        total = torch.zeros(weight.shape[1], dtype=torch.float64, device=outputs.device)
        for start in range(0, outputs.shape[0], _HEAD_CHUNK):
            chunk = outputs[start : start + _HEAD_CHUNK].double().reshape(-1, weight.shape[1], head_dim)
            contribution = torch.einsum("thd,ohd->tho", chunk, weight)  # what each head adds to the residual
            total += torch.linalg.vector_norm(contribution, dim=-1).sum(dim=0)
        _add(sums, key, total)

    return hook


def _remember_input(pending: dict):
    def hook(module, args, kwargs):
        parameters = list(inspect.signature(module.forward).parameters)
        pending["input"] = args[0] if args else kwargs[parameters[0]]

    return hook


def _accumulate_products(sums: dict, key, pending: dict):
    def hook(module, args, output):
        inputs = _tokens(pending.pop("input")).double()
        outputs = _tokens(output[0] if isinstance(output, tuple) else output).double()
        xtx, xty = inputs.T @ inputs, inputs.T @ outputs
        if key in sums:
            xtx, xty = sums[key][0] + xtx, sums[key][1] + xty
        sums[key] = (xtx, xty)

    return hook


def _count_routes(sums: dict, key, top_k: int):
    def hook(module, args):
        logits = nn.functional.linear(_tokens(args[0]), module.weight, getattr(module, "bias", None))
        chosen = torch.topk(logits, top_k, dim=-1).indices.reshape(-1)
        _add(sums, key, torch.bincount(chosen, minlength=module.weight.shape[0]).double())

    return hook
