"""Loading a checkpoint whose tensors disagree with `per_layer_config` fails loudly, naming layer and tensor."""

import io
import json
import logging
from contextlib import contextmanager

import pytest
import torch

from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as transformers_logging

from .conftest import TINY


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config={1: {"intermediate_size": 32}}))
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    return tmp_path


@contextmanager
def load_report():
    """Collects what Transformers logs while loading (its load report)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = transformers_logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def rewrite_per_layer_config(path, per_layer_config: dict) -> None:
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config["per_layer_config"] = per_layer_config
    config_file.write_text(json.dumps(config))


def test_shape_mismatch_fails_and_names_layer_and_tensor(checkpoint):
    rewrite_per_layer_config(checkpoint, {"1": {"intermediate_size": 48}})
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes") as raised:
        AutoModelForCausalLM.from_pretrained(checkpoint)
    for name, shapes in (
        ("gate_proj", "(32, 64) in the checkpoint and (48, 64)"),
        ("down_proj", "(64, 32) in the checkpoint and (64, 48)"),
    ):
        assert f"layer 1: model.layers.1.mlp.{name}.weight is {shapes} in the model" in str(raised.value)


def test_tensors_of_a_skipped_sub_block_are_reported_as_dropped_by_the_skip(checkpoint):
    """A config that skips what the checkpoint holds loads the rest and says which tensors the skip dropped."""
    rewrite_per_layer_config(checkpoint, {"1": {"intermediate_size": 32, "skip": ["attention"]}})
    with load_report() as stream:
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
    report = stream.getvalue()
    assert "layer 1 skips 'attention', so the checkpoint's 5 tensors of that sub-block are dropped" in report
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f"model.layers.1.self_attn.{name}.weight" in report
    assert "UNEXPECTED" not in report
    assert not [key for key in model.state_dict() if key.startswith("model.layers.1.self_attn")]
