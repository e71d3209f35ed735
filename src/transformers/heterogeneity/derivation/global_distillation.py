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
"""An optional short global distillation of an assembled child, with the stock `Trainer`.

After blockwise distillation each layer matches its parent layer alone; the assembled child still accumulates the
layers' small errors. Puzzle (arXiv 2411.19146, section 5) ends with global knowledge distillation: the whole child is
trained to match the parent's next-token distribution. This is that step, as a `Trainer` whose loss is the KL
divergence `KL(parent || child)` of the next-token distributions on calibration sequences.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from ...trainer import Trainer
from ...trainer_callback import ProgressCallback
from ...training_args import TrainingArguments
from .calibration import CalibrationData
from .scoring import kl_divergence


__all__ = ["DistillationTrainer", "distill_globally"]


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss is `KL(teacher || model)` of the next-token distributions, averaged over tokens."""

    def __init__(self, *args, teacher: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=inputs["input_ids"]).logits
        outputs = model(input_ids=inputs["input_ids"])
        loss = kl_divergence(teacher_logits, outputs.logits)
        return (loss, outputs) if return_outputs else loss


class _ProgressBarOnly(ProgressCallback):
    """The progress bar, without the line of metrics it prints at every logging step (the losses are returned)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def distill_globally(
    child: nn.Module,
    parent: nn.Module,
    data: CalibrationData,
    steps: int,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    seed: int = 0,
    **training_arguments,
) -> list[float]:
    """Trains the whole `child` for `steps` optimizer steps to match `parent` on `data`; returns the logged losses.
    `training_arguments` go to `TrainingArguments` (e.g. `bf16=True`, `gradient_accumulation_steps`). A derived
    child's record (`child.derive_record`) notes the training: no tensor is a bit-for-bit copy of the parent's after
    it."""
    dataset = [{"input_ids": sequence} for sequence in data.input_ids]
    training_arguments.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    training_arguments.setdefault("disable_tqdm", False)
    with tempfile.TemporaryDirectory(prefix="derive-kd-") as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            seed=seed,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            **training_arguments,
        )
        trainer = DistillationTrainer(model=child, args=arguments, train_dataset=dataset, teacher=parent)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_ProgressBarOnly)
        trainer.train()
    child.eval()
    record = getattr(child, "derive_record", None)
    if record is not None:
        record.global_distillation = {"steps": steps, "learning_rate": learning_rate, "batch_size": batch_size}
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
