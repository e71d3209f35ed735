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
"""Scoring a layer variant by what it changes in the parent's predictions, and timing it.

Puzzle (arXiv 2411.19146, section 5) scores each block variant by putting it in place of the parent's block, alone,
and measuring how far the model's next-token distribution moves: the KL divergence `KL(parent || parent with that one
block replaced)`, averaged over calibration tokens, ranked variants better than the language-modelling loss in its
ablations. Scores of different layers are then summed by the search, as if their effects added up.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn

from .calibration import CalibrationData


__all__ = ["kl_divergence", "reference_log_probs", "replaced_layer", "replacement_kl", "time_layer"]


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of `KL(teacher || student)` of the next-token distributions given by the logits."""
    teacher = torch.log_softmax(teacher_logits.float(), dim=-1).reshape(-1, teacher_logits.shape[-1])
    student = torch.log_softmax(student_logits.float(), dim=-1).reshape(-1, student_logits.shape[-1])
    return nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")


@torch.no_grad()
def reference_log_probs(model: nn.Module, data: CalibrationData) -> list[torch.Tensor]:
    """The model's logits on every calibration batch (kept for the KL of each replacement)."""
    return [model(input_ids=batch.to(model.device), use_cache=False).logits.float() for batch in data.batches()]


@contextlib.contextmanager
def replaced_layer(model: nn.Module, qualified_name: str, layer: nn.Module) -> Iterator[None]:
    """`model` with the module at `qualified_name` (a decoder layer, e.g. `model.layers.3`) replaced by `layer`."""
    container_name, _, key = qualified_name.rpartition(".")
    container = model.get_submodule(container_name)
    original = (
        container[int(key)] if isinstance(container, (nn.ModuleList, nn.Sequential)) else getattr(container, key)
    )
    _set(container, key, layer)
    try:
        yield
    finally:
        _set(container, key, original)


def _set(container: nn.Module, key: str, module: nn.Module) -> None:
    if isinstance(container, (nn.ModuleList, nn.Sequential)):
        container[int(key)] = module
    else:
        setattr(container, key, module)


@torch.no_grad()
def replacement_kl(
    model: nn.Module, qualified_name: str, layer: nn.Module, data: CalibrationData, reference: list[torch.Tensor]
) -> float:
    """Mean `KL(model || model with `layer` in place of the layer at `qualified_name`)` over the calibration tokens."""
    total = 0.0
    with replaced_layer(model, qualified_name, layer):
        for batch, logits in zip(data.batches(), reference):
            replaced = model(input_ids=batch.to(model.device), use_cache=False).logits
            total += kl_divergence(logits, replaced).item() * batch.numel()
    return total / data.num_tokens


@torch.no_grad()
def time_layer(layer: nn.Module, hidden_states: torch.Tensor, kwargs: dict, repeats: int = 7) -> float:
    """Median wall time of one forward of `layer` on `hidden_states`, in milliseconds (after one warm-up)."""
    synchronize = torch.cuda.synchronize if hidden_states.is_cuda else (lambda: None)
    times = []
    for repeat in range(repeats + 1):
        synchronize()
        started = time.perf_counter()
        layer(hidden_states, **kwargs)
        synchronize()
        if repeat:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
