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
"""`convert` checks every tensor against the model the config describes, from the safetensors headers: a checkpoint
whose tensors have another shape or kind of number, or whose index disagrees with its shards, is refused by tensor
name with what was expected and what was found, and nothing is written (`conversion.py`)."""

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from transformers.heterogeneity.commands.cli import app

from .checkpoints import write_deci_checkpoint, write_nemotron_checkpoint
from .gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle_checkpoint
from .nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle_checkpoint


runner = CliRunner()
FLOATS = "BF16/F16/F32/F64"


def header(directory, name):
    """(dtype, shape) of `name` as the fixture wrote it, read with safetensors itself."""
    for shard in directory.rglob("*.safetensors"):
        with safe_open(shard, framework="pt") as weights:
            if name in weights.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                tensor_slice = weights.get_slice(name)
                return tensor_slice.get_dtype(), tensor_slice.get_shape()
    raise KeyError(name)


def rewrite(directory, names, change):
    """Replaces the tensors `names` by `change(tensor)` in the shards holding them (the index stays valid)."""
    for shard in directory.rglob("*.safetensors"):
        tensors = load_file(shard)
        if set(names) & set(tensors):
            tensors.update({name: change(tensors[name]).contiguous() for name in names if name in tensors})
            save_file(tensors, shard, metadata={"format": "pt"})


def convert_refused(directory, tmp_path, *options):
    before = sorted(path.name for path in tmp_path.iterdir())
    result = runner.invoke(app, ["convert", *options, str(directory), str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # nothing written
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


UP_PROJ = "model.layers.0.mlp.up_proj.weight"


@pytest.mark.parametrize(
    ("change", "found_dtype", "found_shape"),
    [
        (lambda tensor: tensor[:-1], "BF16", lambda shape: [shape[0] - 1, shape[1]]),
        (lambda tensor: tensor.T.contiguous(), "BF16", lambda shape: shape[::-1]),
        (lambda tensor: tensor.to(torch.int32), "I32", lambda shape: shape),
        (lambda tensor: tensor.to(torch.float8_e4m3fn), "F8_E4M3", lambda shape: shape),
        (lambda tensor: tensor[None], "BF16", lambda shape: [1, *shape]),
    ],
    ids=["shorter", "transposed", "integers", "fp8-without-scales", "extra-dimension"],
)
def test_a_tensor_of_another_shape_or_kind_is_refused_by_name(tmp_path, change, found_dtype, found_shape):
    source = write_nemotron_checkpoint(tmp_path / "src")
    dtype, shape = header(source, UP_PROJ)
    assert dtype == "BF16" and shape[0] != shape[1]
    rewrite(source, [UP_PROJ], change)
    message = convert_refused(source, tmp_path)
    assert "does not match its config: 1 tensors differ from the llama model the config describes" in message
    assert f"`{UP_PROJ}`: expected {FLOATS} {shape}, found {found_dtype} {found_shape(shape)}" in message


def test_a_single_file_checkpoint_is_checked_too(tmp_path):
    source = write_deci_checkpoint(tmp_path / "src")
    name = "model.embed_tokens.weight"
    _, shape = header(source, name)
    rewrite(source, [name], lambda tensor: tensor[:, :-2])
    assert f"`{name}`: expected {FLOATS} {shape}, found BF16 [{shape[0]}, {shape[1] - 2}]" in (
        convert_refused(source, tmp_path)
    )


EXPERT = "backbone.layers.1.mixer.experts.{}.up_proj.weight"  # 4 experts of [16, 64] in the fixture's layer 1


def test_per_expert_tensors_that_do_not_stack_are_refused(tmp_path):
    source = write_nemotron_h_puzzle_checkpoint(tmp_path / "src")
    _, shape = header(source, EXPERT.format(2))
    rewrite(source, [EXPERT.format(2)], lambda tensor: tensor[:-1])
    message = convert_refused(source, tmp_path)
    assert (
        f"`model.layers.1.mixer.experts.up_proj` (loaded from 4 tensors such as `{EXPERT.format(0)}` BF16 {shape}): "
        "expected [4, 16, 64], found tensors that do not combine"
    ) in message


def test_per_expert_tensors_that_stack_into_another_shape_are_refused(tmp_path):
    source = write_nemotron_h_puzzle_checkpoint(tmp_path / "src")
    rewrite(source, [EXPERT.format(idx) for idx in range(4)], lambda tensor: tensor[:, :32])
    message = convert_refused(source, tmp_path)
    assert "`model.layers.1.mixer.experts.up_proj` (loaded from 4 tensors such as" in message
    assert "expected [4, 16, 64], found [4, 16, 32]" in message


def test_a_per_expert_tensor_of_another_kind_is_refused(tmp_path):
    source = write_nemotron_h_puzzle_checkpoint(tmp_path / "src")
    rewrite(source, [EXPERT.format(3)], lambda tensor: tensor.to(torch.int16))
    assert f"`{EXPERT.format(3)}`: expected {FLOATS}, found I16 [16, 64]" in convert_refused(source, tmp_path)


BLOCKS = "model.layers.2.mlp.experts.gate_up_proj_blocks"


@pytest.mark.parametrize(
    ("name", "change", "found"),
    [
        (BLOCKS, lambda tensor: tensor[:, :, :1], "U8 [2, 64, 1, 16]"),
        (BLOCKS, lambda tensor: tensor.view(torch.int8), "I8 [2, 64, 2, 16]"),
        (BLOCKS.replace("_blocks", "_scales"), lambda tensor: tensor[:1], "U8 [1, 64, 2]"),
    ],
    ids=["blocks-shape", "blocks-dtype", "scales-shape"],
)
def test_mxfp4_blocks_and_scales_of_another_shape_or_dtype_are_refused(tmp_path, name, change, found):
    """Layer 2 holds 2 experts of gate_up_proj [hidden 64, 2 x width 32]: MXFP4 packs 32 values per block, 2 per byte
    (OCP MX spec), so blocks are uint8 [2, 64, 64 / 32, 16] and scales uint8 [2, 64, 2]."""
    source = write_gpt_oss_puzzle_checkpoint(tmp_path / "src", mxfp4=True)
    assert header(source, BLOCKS) == ("U8", [2, 64, 2, 16])
    rewrite(source, [name], change)
    expected = "U8 [2, 64, 2, 16]" if name == BLOCKS else "U8 [2, 64, 2]"
    assert f"`{name}`: expected {expected}, found {found}" in convert_refused(
        source, tmp_path, "--drop-unused-tensors"
    )


def test_an_index_listing_a_tensor_no_shard_holds_is_refused(tmp_path):
    source = write_nemotron_checkpoint(tmp_path / "src")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = index["weight_map"][UP_PROJ]
    index["weight_map"]["model.layers.5.self_attn.q_proj.weight"] = shard
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    assert f"lists `model.layers.5.self_attn.q_proj.weight` in {shard}, but no shard holds it" in (
        convert_refused(source, tmp_path)
    )


def test_an_index_placing_a_tensor_in_another_shard_is_refused(tmp_path):
    source = write_nemotron_checkpoint(tmp_path / "src")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = index["weight_map"][UP_PROJ]
    other = next(name for name in sorted(set(index["weight_map"].values())) if name != shard)
    index["weight_map"][UP_PROJ] = other
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    assert f"lists `{UP_PROJ}` in {other}, but it is in {shard}" in convert_refused(source, tmp_path)


def test_a_shard_tensor_the_index_does_not_list_is_refused(tmp_path):
    source = write_nemotron_checkpoint(tmp_path / "src")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    shard = index["weight_map"].pop(UP_PROJ)
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    assert f"does not list `{UP_PROJ}`, which {shard} holds" in convert_refused(source, tmp_path)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("[]", "Cannot read"),
        ('{"weight_map": ["model-00001-of-00003.safetensors"]}', "`weight_map` must map tensor names to file names"),
        ('{"weight_map": {"lm_head.weight": 3}}', "`weight_map` must map tensor names to file names"),
    ],
    ids=["a-list", "a-list-of-files", "a-number-for-a-file"],
)
def test_a_malformed_index_is_one_line(tmp_path, index, message):
    source = write_nemotron_checkpoint(tmp_path / "src")
    (source / "model.safetensors.index.json").write_text(index)
    assert message in convert_refused(source, tmp_path)


@pytest.mark.parametrize("value", ['"4"', "4.0", "null"])
def test_a_config_whose_layer_count_is_not_an_integer_is_one_line(tmp_path, value):
    source = write_nemotron_checkpoint(tmp_path / "src")
    text = (source / "config.json").read_text()
    (source / "config.json").write_text(re.sub(r'"num_hidden_layers": \d+', f'"num_hidden_layers": {value}', text))
    message = convert_refused(source, tmp_path)
    assert "Cannot read" in message and "num_hidden_layers" in message
