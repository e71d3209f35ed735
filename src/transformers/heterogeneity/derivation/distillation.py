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
"""Blockwise local distillation (BLD): each changed layer of a child learns, alone, to reproduce its parent layer.

Puzzle (Bercovich et al., arXiv 2411.19146, section 4) trains every changed block on the parent's own input to that
block, with the parent block's output as the target, so the blocks are independent of each other: a block never sees
another child block's error, and blocks can train in parallel, on different processes. Here a block is one decoder
layer; only its tensors that are not copies of the parent's are trained (a layer whose attention changed keeps its
copied MLP as it is). The loss is the squared error of the layer's output, normalised by the energy of what the parent
layer adds to the residual stream (`||y_child - y_parent||^2 / ||y_parent - x||^2`), so it reads as a fraction of the
layer's contribution whatever the scale of the residual stream.

- Deterministic: block `i` trains with seed `seed + i` and visits the calibration batches in an order drawn from that
  seed, so the result does not depend on which process trains it or on the number of processes.
- Resumable: each trained block is saved to `work_dir` as soon as it finishes (written under a temporary name and
  renamed); a rerun with the same `work_dir` loads the blocks already there and trains the others.
- Distributed: in a `torch.distributed` job (`torchrun`, `accelerate launch`; gloo or NCCL) block `k` of the changed
  ones trains on process `k % world_size`; `work_dir` must be visible to every process (a shared file system). After
  a barrier every process loads every block, so all hold the same child.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ...utils import logging
from ...utils.logging import tqdm
from .calibration import CalibrationData
from .configs import DeriveError, DistillationConfig
from .layers import decoder_layers, model_spec
from .records import DeriveRecord


logger = logging.get_logger(__name__)

__all__ = ["LayerBatches", "blockwise_distill", "capture_layer_io", "train_block"]

BLOCK_FILE = "layer_{:05d}.safetensors"


@dataclass
class LayerBatches:
    """The parent's input to one layer, the other arguments of its call (masks, position embeddings), and its output,
    for every calibration batch."""

    inputs: list[torch.Tensor]
    kwargs: list[dict]
    outputs: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.inputs)


@torch.no_grad()
def capture_layer_io(model: nn.Module, layers: dict[int, nn.Module], data: CalibrationData, batch_size: int):
    """Runs `model` over `data` and keeps, for each layer of `layers` (by index), what it read and returned."""
    captured = {idx: LayerBatches([], [], []) for idx in layers}
    handles = []
    for idx, layer in layers.items():
        handles.append(layer.register_forward_pre_hook(_keep_inputs(captured[idx]), with_kwargs=True))
        handles.append(layer.register_forward_hook(_keep_output(captured[idx])))
    try:
        for batch in data.batches(batch_size):
            model(input_ids=batch.to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _keep_inputs(store: LayerBatches):
    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden_states = args[0] if args else kwargs.pop("hidden_states")
        kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_value", None)
        store.inputs.append(hidden_states.detach())
        store.kwargs.append({**kwargs, "use_cache": False})

    return hook


def _keep_output(store: LayerBatches):
    def hook(module, args, output):
        store.outputs.append((output[0] if isinstance(output, tuple) else output).detach())

    return hook


def layer_output(layer: nn.Module, hidden_states: torch.Tensor, kwargs: dict) -> torch.Tensor:
    output = layer(hidden_states, **kwargs)
    return output[0] if isinstance(output, tuple) else output


def normalized_error(output: torch.Tensor, target: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
    """`||output - target||^2 / ||target - hidden_states||^2`: the error as a fraction of the parent layer's
    contribution to the residual stream."""
    contribution = (target.float() - hidden_states.float()).pow(2).sum().clamp_min(torch.finfo(torch.float32).tiny)
    return (output.float() - target.float()).pow(2).sum() / contribution


@torch.no_grad()
def block_loss(layer: nn.Module, batches: LayerBatches) -> float:
    """The mean normalised error of `layer` over all batches."""
    losses = [
        normalized_error(layer_output(layer, x, kwargs), y, x).item()
        for x, kwargs, y in zip(batches.inputs, batches.kwargs, batches.outputs)
    ]
    return sum(losses) / len(losses)


def train_block(
    layer: nn.Module, trainable: list[nn.Parameter], batches: LayerBatches, config: DistillationConfig, seed: int
) -> tuple[float, float]:
    """Trains `trainable` (parameters of `layer`) so that `layer` reproduces the parent's outputs; returns the mean
    normalised error before and after. A block whose error did not go down keeps the weights it started with."""
    before = block_loss(layer, batches)
    initial = [parameter.detach().clone() for parameter in trainable]
    frozen = [p for p in layer.parameters() if all(p is not t for t in trainable)]
    flags = [p.requires_grad for p in frozen]
    for parameter in frozen:
        parameter.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    layer.train()
    try:
        for index in _batch_order(len(batches), config.steps, seed):
            loss = normalized_error(
                layer_output(layer, batches.inputs[index], batches.kwargs[index]),
                batches.outputs[index],
                batches.inputs[index],
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        layer.eval()
        for parameter, flag in zip(frozen, flags):
            parameter.requires_grad_(flag)
    after = block_loss(layer, batches)
    if after >= before:
        with torch.no_grad():
            for parameter, value in zip(trainable, initial):
                parameter.copy_(value)
        return before, before
    return before, after


def _batch_order(num_batches: int, steps: int, seed: int) -> Iterator[int]:
    """`steps` batch indices: shuffled epochs over the batches, drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(math.ceil(steps / num_batches)):
        order = torch.randperm(num_batches, generator=generator).tolist()
        yield from order[: steps - epoch * num_batches]


def blockwise_distill(
    parent: nn.Module,
    child: nn.Module,
    record: DeriveRecord,
    data: CalibrationData,
    config: DistillationConfig,
    seed: int = 0,
    progress: bool = True,
) -> dict[int, tuple[float, float]]:
    """Trains every layer of `child` that holds tensors not copied from `parent` (per `record`); marks them in `record`
    and returns each layer's normalised error before and after training."""
    rank, world_size = _process_group()
    spec = model_spec(parent)
    parent_layers, child_layers = decoder_layers(parent, spec), decoder_layers(child, spec)
    not_copied = set(record.not_copied())
    trainable = {}
    for idx, (prefix, layer) in enumerate(child_layers):
        names = [name for name, _ in layer.named_parameters(prefix=prefix) if name in not_copied]
        if names:
            trainable[idx] = names
    if world_size > 1 and config.work_dir is None:
        raise DeriveError(
            f"Blockwise distillation over {world_size} processes needs `work_dir` on a file system every process sees "
            "(DistillationConfig(work_dir=...), or --work-dir): the processes exchange trained blocks through it."
        )
    with _work_dir(config.work_dir) as work_dir:
        mine = [idx for position, idx in enumerate(sorted(trainable)) if position % world_size == rank]
        todo = [idx for idx in mine if not (work_dir / BLOCK_FILE.format(idx)).exists()]
        if len(todo) < len(mine):
            logger.warning(f"[rank {rank}] resuming: {len(mine) - len(todo)} of {len(mine)} blocks already trained.")
        losses = {}
        if todo:
            captured = capture_layer_io(parent, {idx: parent_layers[idx][1] for idx in todo}, data, config.batch_size)
            bar = tqdm(todo, desc=f"Blockwise distillation (rank {rank})", unit="block", disable=not progress)
            for idx in bar:
                started = time.perf_counter()
                prefix, layer = child_layers[idx]
                parameters = dict(layer.named_parameters(prefix=prefix))
                losses[idx] = train_block(
                    layer, [parameters[name] for name in trainable[idx]], captured.pop(idx), config, seed + idx
                )
                _save_block(work_dir / BLOCK_FILE.format(idx), {name: parameters[name] for name in trainable[idx]})
                bar.set_postfix(layer=idx, error=f"{losses[idx][0]:.4f}->{losses[idx][1]:.4f}")
                logger.info(
                    f"[rank {rank}] layer {idx}: normalised error {losses[idx][0]:.4f} -> {losses[idx][1]:.4f} in "
                    f"{config.steps} steps, {time.perf_counter() - started:.1f} s"
                )
        if world_size > 1:  # every process gets every block's errors, for the record
            gathered: list[dict] = [{} for _ in range(world_size)]
            torch.distributed.all_gather_object(gathered, losses)
            losses = {idx: value for part in gathered for idx, value in part.items()}
        for idx, names in trainable.items():
            prefix, layer = child_layers[idx]
            parameters = dict(layer.named_parameters(prefix=prefix))
            with torch.no_grad():
                for name, value in load_file(work_dir / BLOCK_FILE.format(idx)).items():
                    parameters[name].copy_(value)
            for name in names:
                record.tensors[name].distilled = True
    record.distillation = {
        **config.to_dict(),
        "world_size": world_size,
        "layers": sorted(trainable),
        "normalised_error": {str(idx): {"before": b, "after": a} for idx, (b, a) in sorted(losses.items())},
    }
    return losses


def _process_group() -> tuple[int, int]:
    """(rank, world size): of the running `torch.distributed` job, which is initialised from the environment when a
    launcher (`torchrun`, `accelerate launch`) set one up and nobody initialised it yet; `(0, 1)` otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


@contextlib.contextmanager
def _work_dir(path: str | os.PathLike | None) -> Iterator[Path]:
    """The configured work directory (kept), or a temporary one (removed)."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="derive-bld-") as temporary:
        yield Path(temporary)


def _save_block(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file({name: tensor.detach().contiguous() for name, tensor in tensors.items()}, partial)
    os.replace(partial, path)
