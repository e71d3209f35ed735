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
"""Blockwise local distillation: each changed layer learns its parent layer alone; deterministic, resumable, spread
over the processes of a `torch.distributed` job; and the global distillation with the stock `Trainer`."""

import logging

import pytest
import torch

from transformers.heterogeneity import DistillationConfig, derive
from transformers.heterogeneity.derivation.calibration import load_calibration
from transformers.heterogeneity.derivation.global_distillation import distill_globally
from transformers.utils import logging as transformers_logging

from .derive_models import calibration_ids, save_parent, tiny_parent
from .distributed_workers import blockwise_distillation_worker, run_on_two_ranks


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


PER_LAYER_CONFIG = {0: {"intermediate_size": 32}, 1: {"num_key_value_heads": 1}, 3: {"num_attention_heads": 4}}
STEPS = 25


@pytest.fixture(scope="module")
def parent():
    return tiny_parent()


@pytest.fixture(scope="module")
def calibration():
    return calibration_ids(8, 32)


def layer_error(parent, child, layer_idx, calibration) -> float:
    """Normalised error of a child layer on the parent's own input to that layer, computed here with hooks."""
    seen = {}
    handles = [
        parent.model.layers[layer_idx].register_forward_pre_hook(
            lambda m, args, kwargs: seen.update(x=args[0] if args else kwargs["hidden_states"], kwargs=kwargs),
            with_kwargs=True,
        ),
        parent.model.layers[layer_idx].register_forward_hook(lambda m, a, out: seen.update(y=out)),
    ]
    with torch.no_grad():
        parent(calibration, use_cache=False)
        for handle in handles:
            handle.remove()
        kwargs = {k: v for k, v in seen["kwargs"].items() if k not in ("hidden_states", "past_key_values")}
        output = child.model.layers[layer_idx](seen["x"], **kwargs)
    y = seen["y"][0] if isinstance(seen["y"], tuple) else seen["y"]
    output = output[0] if isinstance(output, tuple) else output
    return ((output - y).pow(2).sum() / (y - seen["x"]).pow(2).sum()).item()


def test_distillation_trains_only_changed_tensors_and_lowers_each_layers_error(parent, calibration):
    initial = derive(parent, PER_LAYER_CONFIG, calibration=calibration, init="random")
    child = derive(
        parent, PER_LAYER_CONFIG, calibration=calibration, init="random",
        distillation=DistillationConfig(steps=STEPS, learning_rate=3e-3, batch_size=4),
    )  # fmt: skip
    record = child.derive_record
    for layer_idx in (0, 1, 3):
        assert layer_error(parent, child, layer_idx, calibration) < 0.8 * layer_error(
            parent, initial, layer_idx, calibration
        )
    for name, tensor in record.tensors.items():
        assert tensor.distilled == (tensor.how != "copied"), name
        if tensor.how == "copied":
            assert torch.equal(child.state_dict()[name], parent.state_dict()[name])
    errors = record.distillation["normalised_error"]
    assert sorted(errors) == ["0", "1", "3"] and all(e["after"] < e["before"] for e in errors.values())


def test_distillation_is_deterministic_and_resumes(parent, calibration, tmp_path):
    config = DistillationConfig(steps=STEPS, batch_size=4, work_dir=tmp_path / "blocks")
    first = derive(parent, PER_LAYER_CONFIG, calibration=calibration, distillation=config).state_dict()
    again = derive(parent, PER_LAYER_CONFIG, calibration=calibration, distillation=DistillationConfig(steps=STEPS, batch_size=4)).state_dict()  # fmt: skip
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert sorted(p.name for p in (tmp_path / "blocks").iterdir()) == [
        "layer_00000.safetensors", "layer_00001.safetensors", "layer_00003.safetensors",
    ]  # fmt: skip

    (tmp_path / "blocks" / "layer_00001.safetensors").unlink()  # as if interrupted before layer 1 was saved
    stream = []
    handler = logging.Handler()
    handler.emit = lambda record: stream.append(record.getMessage())
    logger = transformers_logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        resumed = derive(parent, PER_LAYER_CONFIG, calibration=calibration, distillation=config)
    finally:
        logger.removeHandler(handler)
    assert any("resuming: 2 of 3 blocks already trained" in line for line in stream)
    assert list(resumed.derive_record.distillation["normalised_error"]) == ["1"]  # only layer 1 trained again
    assert all(torch.equal(value, first[name]) for name, value in resumed.state_dict().items())


def test_distillation_over_two_processes_equals_one(tmp_path, calibration):
    """Blocks spread over two gloo ranks (round robin over the changed layers): the same child, bit for bit, as a
    single process, every rank holding all of it."""
    parent_dir = save_parent(tmp_path / "parent")
    single = derive(
        parent_dir, PER_LAYER_CONFIG, calibration=calibration,
        distillation=DistillationConfig(steps=STEPS, batch_size=4),
    ).state_dict()  # fmt: skip
    (tmp_path / "out").mkdir()
    results = run_on_two_ranks(
        blockwise_distillation_worker, tmp_path / "out", parent_dir, PER_LAYER_CONFIG, calibration,
        tmp_path / "shared", STEPS,
    )  # fmt: skip
    for rank, result in enumerate(results):
        assert "error" not in result, result.get("error")
        assert result["distillation"]["world_size"] == 2
        assert all(torch.equal(value, single[name]) for name, value in result["state"].items()), rank
    assert results[0]["files"] == ["layer_00000.safetensors", "layer_00001.safetensors", "layer_00003.safetensors"]
    # every rank records the errors of every block, whichever rank trained it
    assert results[0]["distillation"]["normalised_error"] == results[1]["distillation"]["normalised_error"]
    assert sorted(results[0]["distillation"]["normalised_error"]) == ["0", "1", "3"]


def test_many_processes_need_a_shared_work_dir(parent, calibration, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="needs `work_dir` on a file system every process sees"):
        derive(parent, PER_LAYER_CONFIG, calibration=calibration, distillation=True)


def test_global_distillation_with_the_stock_trainer_brings_the_child_closer(parent, calibration):
    child = derive(parent, {1: {"intermediate_size": 16}, 2: {"intermediate_size": 16}}, init="random")
    data = load_calibration(calibration)

    def kl() -> float:
        with torch.no_grad():
            teacher = torch.log_softmax(parent(calibration).logits, -1)
            student = torch.log_softmax(child(calibration).logits, -1)
        return (teacher.exp() * (teacher - student)).sum(-1).mean().item()

    before = kl()
    losses = distill_globally(child, parent, data, steps=12, learning_rate=3e-3, batch_size=4)
    assert len(losses) == 12
    assert kl() < 0.8 * before
    assert child.derive_record.global_distillation == {"steps": 12, "learning_rate": 3e-3, "batch_size": 4}
