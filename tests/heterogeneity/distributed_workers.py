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
"""Two CPU processes over gloo, as `torchrun --nproc-per-node 2` would start them, for the distributed tests.

The workers live in this small module (not in the test module) so that each spawned process imports only what it
runs. Every rank saves what it computed (or the error it raised) to `<out>/rank<r>.pt`; the test compares those with
a single-process run.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.multiprocessing as mp


WORLD_SIZE = 2


def run_on_two_ranks(worker: Callable, out: Path, *args, timeout: float = 240.0) -> list:
    """Runs `worker(rank, out, *args)` in two fresh processes and returns what each rank saved.

    The processes are killed after `timeout` seconds, so a hung collective fails the test instead of the suite.
    """
    with socket.socket() as probe:  # a free port for the rendezvous on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.start_processes(
        _entry, args=(port, worker, out, *args), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{worker.__name__} did not finish on {WORLD_SIZE} ranks within {timeout:.0f} s")
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


def _entry(rank: int, port: int, worker: Callable, out: Path, *args) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)  # two ranks on a shared 2-core machine
    try:
        result = worker(rank, *args)
    except Exception:  # the test reports it; a rank that died would only show as a hang of the other
        result = {"error": traceback.format_exc()}
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    torch.save(result, out / f"rank{rank}.pt")


def tensor_parallel_worker(rank: int, checkpoint: Path, indivisible_checkpoint: Path, input_ids: torch.Tensor) -> dict:
    """Loads `checkpoint` with `tp_plan="auto"` and computes its logits; then tries `indivisible_checkpoint`, whose
    heads some layer cannot split over two ranks, and returns the error it raised."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, tp_plan="auto").eval()
    with torch.no_grad():
        logits = model(input_ids).logits
    sharded = type(model.model.layers[0].self_attn.k_proj.weight).__name__
    try:
        AutoModelForCausalLM.from_pretrained(indivisible_checkpoint, tp_plan="auto")
        refusal = None
    except Exception as error:  # the test checks the type and message
        refusal = (type(error).__name__, str(error))
    return {"logits": logits, "weight_type": sharded, "refusal": refusal}


def train_steps(model: torch.nn.Module, batches: list[torch.Tensor], learning_rate: float) -> list[torch.Tensor]:
    """One plain SGD step per batch (labels = inputs, the causal-LM loss); the loss of each step."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    losses = []
    for batch in batches:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def fsdp_worker(rank: int, checkpoint: Path, batches: list[torch.Tensor], learning_rate: float) -> dict:
    """Trains `checkpoint` with FSDP2 (`fully_shard` on every decoder layer, then the model), each rank on its half
    of every batch, and returns the mean loss of each step over the ranks."""
    from torch.distributed.fsdp import fully_shard

    from transformers import AutoModelForCausalLM

    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    losses = torch.stack(train_steps(model, [batch[rank::WORLD_SIZE] for batch in batches], learning_rate))
    torch.distributed.all_reduce(losses)  # every half holds the same number of tokens: the mean of the two halves
    return {"losses": losses / WORLD_SIZE, "weight_type": type(model.model.layers[0].mlp.up_proj.weight).__name__}


def blockwise_distillation_worker(
    rank: int, parent_dir: Path, per_layer_config: dict, calibration: torch.Tensor, work_dir: Path, steps: int
) -> dict:
    """Derives a child with blockwise distillation spread over the ranks (the process group comes from the
    environment, as under `torchrun`); returns its state dict and what the distillation recorded."""
    from transformers.heterogeneity import DistillationConfig, derive

    child = derive(
        parent_dir,
        per_layer_config,
        calibration=calibration,
        distillation=DistillationConfig(steps=steps, batch_size=4, work_dir=work_dir),
    )
    trained = sorted(path.name for path in work_dir.iterdir())
    return {"state": child.state_dict(), "distillation": child.derive_record.distillation, "files": trained}
