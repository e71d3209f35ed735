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
"""`transformers-heterogeneity derive` and `search` end to end on a local parent: the child reloads with the stock Auto
classes and generates; bad input is refused with a clear message and leaves nothing behind."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.heterogeneity.commands.cli import app

from .derive_models import CALIBRATION_TEXT, save_parent


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


runner = CliRunner()
PER_LAYER_CONFIG = '{"1": {"intermediate_size": 48}, "2": {"num_key_value_heads": 2, "skip": ["mlp"]}}'


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("derive-cli")
    save_parent(root / "parent")
    (root / "calibration.txt").write_text(CALIBRATION_TEXT)
    (root / "empty.txt").write_text("")
    return root


def reload_and_generate(directory):
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    input_ids = tokenizer("def function_", return_tensors="pt").input_ids
    generated = model.generate(input_ids, max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, input_ids.shape[1] + 6)
    return model


def test_derive_writes_a_checkpoint_the_stock_classes_load_and_serve(files, tmp_path):
    output = tmp_path / "child"
    result = runner.invoke(
        app,
        ["derive", str(files / "parent"), str(output), "--per-layer-config", PER_LAYER_CONFIG,
         "--calibration", str(files / "calibration.txt"), "--sequence-length", "64", "--num-sequences", "8",
         "--distill-steps", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Saved the child to {output}" in result.output
    assert "layer 1 mlp: intermediate_size 96 -> 48 (ffn:importance)" in result.output
    assert "layer 2 attention: heads 8 -> 8, KV heads 4 -> 2, head_dim 8 -> 8 (kv_heads:importance)" in result.output
    assert "layer 2 mlp: stock -> skipped (dropped)" in result.output
    model = reload_and_generate(output)
    assert model.model.layers[1].mlp.up_proj.weight.shape == (48, 64)
    assert model.model.layers[2].self_attn.k_proj.weight.shape == (16, 64)
    record = json.loads((output / "derivation.json").read_text())
    assert record["distillation"]["steps"] == 3 and record["calibration"]["sequence_length"] == 64
    assert record["tensors"]["model.layers.1.mlp.up_proj.weight"]["distilled"] is True


def test_derive_init_as_json_and_per_layer_config_from_a_file(files, tmp_path):
    plc_file = tmp_path / "plc.json"
    plc_file.write_text('{"3": {"intermediate_size": 24}}')
    output = tmp_path / "child"
    result = runner.invoke(
        app, ["derive", str(files / "parent"), str(output), "--per-layer-config", str(plc_file), "--init", '{"ffn": "truncate"}']
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    parent = AutoModelForCausalLM.from_pretrained(files / "parent")
    child = AutoModelForCausalLM.from_pretrained(output)
    assert torch.equal(child.model.layers[3].mlp.down_proj.weight, parent.model.layers[3].mlp.down_proj.weight[:, :24])


def test_search_writes_the_child_the_choice_and_its_table(files, tmp_path):
    output = tmp_path / "searched"
    variants = '[{"intermediate_size": 48}, {"skip": ["mlp"]}, {"skip": ["attention"]}]'
    result = runner.invoke(
        app,
        ["search", str(files / "parent"), str(output), "--budget", "params=75%", "--budget", "kv_bytes=80%",
         "--calibration", str(files / "calibration.txt"), "--sequence-length", "64", "--num-sequences", "4",
         "--variants", variants],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| layer | variant | KL score | params | kv_bytes | flops |" in result.output
    choice = json.loads((output / "search.json").read_text())
    assert choice["budgets"] == ["params=75%", "kv_bytes=80%"]
    assert choice["totals"]["params"] <= 0.75 * choice["parent_totals"]["params"]
    assert choice["totals"]["kv_bytes"] <= 0.8 * choice["parent_totals"]["kv_bytes"]
    assert (output / "search.md").read_text().strip() in result.output
    model = reload_and_generate(output)
    saved = {int(k): v for k, v in json.loads((output / "config.json").read_text())["per_layer_config"].items()}
    assert saved == {int(k): v for k, v in choice["per_layer_config"].items()}
    assert sum(p.numel() for p in model.model.layers.parameters()) == choice["totals"]["params"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--init", "prune"], "Unknown init mode 'prune'"),
        (["--per-layer-config", '{"9": {"intermediate_size": 48}}'], "Layer '9' of per_layer_config is out of range: the parent has 4 layers"),
        (["--per-layer-config", "{not json"], "--per-layer-config: invalid JSON"),
        (["--per-layer-config", "nowhere.json"], "neither JSON nor an existing file"),
        (["--calibration", "missing.txt"], "Calibration file missing.txt does not exist"),
        (["--calibration", "EMPTY"], "is empty: it holds no text"),
        (["--per-layer-config", '{"1": {"skip": ["attn"]}}'], "attn"),
        (["--global-distill-steps", "2"], "--global-distill-steps trains on calibration text: pass --calibration"),
    ],
)  # fmt: skip
def test_derive_refuses_bad_input_and_writes_nothing(files, tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    arguments = [str(files / "empty.txt") if a == "EMPTY" else a for a in arguments]
    if "--per-layer-config" not in arguments:
        arguments += ["--per-layer-config", PER_LAYER_CONFIG]
    output = tmp_path / "child"
    result = runner.invoke(app, ["derive", str(files / "parent"), str(output), *arguments])
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and message in result.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("budget", "message"),
    [("params=1%", "No choice of one variant per layer meets the budget"), ("size=50%", "write NAME=VALUE")],
)
def test_search_refuses_bad_budgets_and_writes_nothing(files, tmp_path, budget, message):
    output = tmp_path / "searched"
    result = runner.invoke(
        app,
        ["search", str(files / "parent"), str(output), "--budget", budget, "--calibration",
         str(files / "calibration.txt"), "--sequence-length", "32", "--num-sequences", "2", "--variants",
         '[{"intermediate_size": 48}]'],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert os.listdir(tmp_path) == []


def test_search_needs_calibration(files, tmp_path):
    result = runner.invoke(app, ["search", str(files / "parent"), str(tmp_path / "out"), "--budget", "params=50%"])
    assert result.exit_code == 2 and "Missing option '--calibration'" in result.output  # typer's usage error
    assert os.listdir(tmp_path) == []


def test_an_existing_output_is_refused(files, tmp_path):
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["derive", str(files / "parent"), str(tmp_path / "taken"), "--per-layer-config", "{}"])
    assert result.exit_code == 1 and "already exists" in result.output
    assert os.listdir(tmp_path / "taken") == []


@pytest.mark.overlay_only  # the console script is the overlay's; in process, the same command runs in both homes
def test_the_installed_console_script_derives(files, tmp_path):
    executable = shutil.which("transformers-heterogeneity", path=os.path.dirname(sys.executable))
    output = tmp_path / "child"
    completed = subprocess.run(
        [executable, "derive", str(files / "parent"), str(output), "--per-layer-config", '{"0": {"skip": ["attention"]}}'],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    reload_and_generate(output)
