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
"""`derive` as a user calls it: what it copies, what it saves, and what it refuses."""

import json
import os

import pytest
import torch

from transformers import AutoModelForCausalLM, LlamaForCausalLM
from transformers.heterogeneity import CalibrationConfig, DeriveError, HeterogeneousConfigError, InitConfig, derive

from .derive_models import CALIBRATION_TEXT, PARENT, calibration_ids, save_parent, tiny_parent


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


@pytest.fixture(scope="module")
def parent():
    return tiny_parent()


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    return save_parent(tmp_path_factory.mktemp("parent"))


def test_a_child_that_changes_nothing_is_the_parent_bit_for_bit(parent):
    child = derive(parent, {})
    assert type(child) is LlamaForCausalLM and not child.config.is_heterogeneous
    parent_state = parent.state_dict()
    assert child.state_dict().keys() == parent_state.keys()
    assert all(torch.equal(value, parent_state[name]) for name, value in child.state_dict().items())
    input_ids = calibration_ids(2, 16)
    with torch.no_grad():
        assert torch.equal(child(input_ids).logits, parent(input_ids).logits)
    assert {tensor.how for tensor in child.derive_record.tensors.values()} == {"copied"}
    assert child.derive_record.sub_blocks == []


def test_overrides_equal_to_the_parents_change_nothing(parent):
    child = derive(parent, {2: {"intermediate_size": PARENT["intermediate_size"]}})
    assert all(torch.equal(value, parent.state_dict()[name]) for name, value in child.state_dict().items())


def test_layers_and_sub_blocks_that_do_not_change_are_copied_bit_for_bit(parent):
    child = derive(parent, {1: {"intermediate_size": 48}, 2: {"skip": ["attention"]}}, calibration=calibration_ids())
    parent_state, child_state = parent.state_dict(), child.state_dict()
    unchanged = [name for name in child_state if not name.startswith(("model.layers.1.mlp.", "model.layers.2."))]
    unchanged += [name for name in child_state if name.startswith("model.layers.2.") or "layers.1.self_attn" in name]
    for name in unchanged:
        assert torch.equal(child_state[name], parent_state[name]), name
        assert child.derive_record.tensors[name].how == "copied"
    assert not [name for name in child_state if name.startswith("model.layers.2.self_attn")]
    assert "model.layers.2.input_layernorm.weight" not in child_state


def test_the_parents_own_overrides_stay(tmp_path):
    parent = tiny_parent(per_layer_config={0: {"intermediate_size": 64}})
    child = derive(parent, {1: {"num_key_value_heads": 2}}, init={"kv_heads": "average"})
    assert child.config.per_layer_config[0].intermediate_size == 64
    assert child.config.per_layer_config[1].num_key_value_heads == 2
    assert torch.equal(child.model.layers[0].mlp.up_proj.weight, parent.model.layers[0].mlp.up_proj.weight)


def test_output_dir_holds_a_standard_checkpoint_with_its_record(parent_dir, tmp_path):
    output = tmp_path / "child"
    child = derive(
        parent_dir,
        {"1": {"intermediate_size": 48}, "3": {"skip": ["mlp"]}},
        calibration=CalibrationConfig([CALIBRATION_TEXT], num_sequences=8, sequence_length=64),
        output_dir=output,
    )
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "llama" and set(config["per_layer_config"]) == {"1", "3"}
    record = json.loads((output / "derivation.json").read_text())
    assert record["parent"] == str(parent_dir)
    assert record["calibration"] == {"source": "(1 texts)", "num_sequences": 8, "sequence_length": 64}
    assert record["tensors"]["model.layers.1.mlp.gate_proj.weight"]["how"] == "ffn:importance"
    assert (output / "tokenizer.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(output)
    input_ids = calibration_ids(1, 12)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids).logits, child(input_ids).logits)
    generated = reloaded.generate(input_ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 16)


def test_calibration_text_is_read_with_the_parents_tokenizer(parent_dir, tmp_path):
    text_file = tmp_path / "calibration.txt"
    text_file.write_text(CALIBRATION_TEXT)
    from transformers.heterogeneity.derivation.calibration import load_calibration

    from .derive_models import byte_tokenizer

    data = load_calibration(CalibrationConfig(text_file, num_sequences=4, sequence_length=50), byte_tokenizer())
    expected = byte_tokenizer()(CALIBRATION_TEXT)["input_ids"][:200]
    assert data.input_ids.tolist() == [expected[i : i + 50] for i in range(0, 200, 50)]


def no_output_left(directory) -> bool:
    parent = os.path.dirname(directory)
    return not os.path.lexists(directory) and not [n for n in os.listdir(parent) if "partial" in n]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"init": "prune"}, DeriveError, "Unknown init mode 'prune'"),
        ({"init": {"ffn": "average"}}, DeriveError, "Unknown init mode 'average' for ffn"),
        ({"init": {"mlp": "truncate"}}, DeriveError, "Unknown sub-block kind 'mlp'"),
        ({"per_layer_config": {4: {"intermediate_size": 48}}}, DeriveError, "Layer 4 of per_layer_config is out of range: the parent has 4 layers (0 to 3)"),
        ({"per_layer_config": {-1: {"intermediate_size": 48}}}, DeriveError, "Layer -1 of per_layer_config is out of range"),
        ({"per_layer_config": {1.5: {"intermediate_size": 48}}}, DeriveError, "Key 1.5 of per_layer_config is not a layer index"),
        ({"per_layer_config": {"\u00b2": {"intermediate_size": 48}}}, DeriveError, "is not a layer index"),
        ({"per_layer_config": {1: {"intermediate_size": 48}, "01": {"intermediate_size": 32}}}, DeriveError, "gives layer 1 twice, as 1 and '01'"),
        ({"per_layer_config": {1: {"intermediate_size": 48}}}, DeriveError, "Layer 1 mlp (intermediate_size 96 -> 48): init mode ffn='importance' measures the parent's activations and needs calibration data"),
        ({"per_layer_config": {1: {"head_dim": 16}}}, DeriveError, "Layer 1 attention: heads 8 -> 8, KV heads 4 -> 4, head_dim 8 -> 16 cannot be initialised from the parent's weights; pass init={'attention_heads': 'random'}"),
        ({"per_layer_config": {1: {"skip": ["attn"]}}}, HeterogeneousConfigError, "attn"),
        ({"per_layer_config": {1: {"num_key_value_heads": 3}}}, HeterogeneousConfigError, "num_key_value_heads"),
        ({"calibration": "missing.txt"}, DeriveError, "Calibration file missing.txt does not exist"),
        ({"calibration": "empty.txt"}, DeriveError, "Calibration file empty.txt is empty"),
        ({"calibration": "short.txt"}, DeriveError, "holds 5 tokens, fewer than one sequence of sequence_length=256"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_writes_nothing(parent_dir, tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "short.txt").write_text("short")
    arguments = {"per_layer_config": {1: {"intermediate_size": 48}}, "calibration": None, **kwargs}
    if "calibration" in kwargs:
        arguments["init"] = "importance"
    output = tmp_path / "child"
    with pytest.raises(error) as raised:
        derive(parent_dir, arguments.pop("per_layer_config"), output_dir=output, **arguments)
    assert message in str(raised.value)
    assert no_output_left(output)


def test_an_existing_output_dir_is_refused_before_any_work(parent_dir, tmp_path):
    output = tmp_path / "taken"
    output.mkdir()
    with pytest.raises(ValueError, match="already exists"):
        derive(parent_dir, {}, output_dir=output)
    assert list(output.iterdir()) == []


def test_init_config_is_checked_when_made():
    with pytest.raises(DeriveError, match="Unknown init mode 'mean' for kv_heads: choose one of"):
        InitConfig(kv_heads="mean")
    assert InitConfig().to_dict() == {
        "ffn": "importance", "kv_heads": "importance", "attention_heads": "importance", "linear": "least_squares",
        "experts": "importance",
    }  # fmt: skip
