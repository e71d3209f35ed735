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
"""`transformers-heterogeneity convert` and `inspect` on checkpoints in the real formats."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.heterogeneity.commands.cli import app
from transformers.heterogeneity.conversion import ConversionError, convert_checkpoint

from .checkpoints import (
    HEAD_DIM,
    NEMOTRON_LAYERS,
    RMS_EPS,
    VOCAB,
    nemotron_specs,
    write_anymodel_llama_checkpoint,
    write_deci_checkpoint,
    write_modelopt_checkpoint,
    write_nemotron_checkpoint,
)
from .conftest import TINY
from .gpt_oss_checkpoints import puzzle_config as gpt_oss_puzzle_config
from .gpt_oss_checkpoints import write_anymodel_gpt_oss_checkpoint
from .gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle_checkpoint
from .nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle_checkpoint
from .reference import reference_forward


runner = CliRunner()


@pytest.fixture(scope="module")
def nemotron(tmp_path_factory):
    return write_nemotron_checkpoint(tmp_path_factory.mktemp("nemotron-nas") / "src")


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_convert_writes_a_stock_llama_checkpoint_with_the_same_logits(nemotron, tmp_path):
    destination = tmp_path / "out"
    result = runner.invoke(app, ["convert", str(nemotron), str(destination)])
    assert result.exit_code == 0, result.output
    assert "[4/4] linked model-00003-of-00003.safetensors" in result.output

    saved = json.loads((destination / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["architectures"] == ["LlamaForCausalLM"]
    assert "block_configs" not in saved and "auto_map" not in saved and "per_layer_config" in saved
    for shard in nemotron.glob("*.safetensors"):  # reused, not rewritten
        assert (destination / shard.name).stat().st_ino == shard.stat().st_ino

    converted, info = AutoModelForCausalLM.from_pretrained(destination, dtype=torch.float32, output_loading_info=True)
    assert type(converted) is LlamaForCausalLM and type(converted.config) is LlamaConfig
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    source = AutoModelForCausalLM.from_pretrained(nemotron, dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(converted, ids), logits(source, ids))
    state = {}
    for shard in nemotron.glob("*.safetensors"):
        state.update({name: tensor.float() for name, tensor in load_file(shard).items()})
    expected = reference_forward(state, nemotron_specs(), ids, final_rms_eps=RMS_EPS)
    torch.testing.assert_close(logits(converted, ids), expected, atol=1e-4, rtol=1e-4)


def test_convert_copies_a_single_file_deci_checkpoint(tmp_path):
    source = write_deci_checkpoint(tmp_path / "deci")
    result = runner.invoke(app, ["convert", "--copy", str(source), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "copied model.safetensors" in result.output
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert [layer.self_attn.k_proj.out_features // layer.self_attn.head_dim for layer in converted.model.layers] == [
        4,
        2,
        1,
        2,
    ]


def break_config(path):
    (path / "config.json").write_text("{not json")


def drop_a_shard(path):
    next(path.glob("model-00002-*.safetensors")).unlink()


def llama_checkpoint(path):
    LlamaForCausalLM(
        LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=10)
    ).save_pretrained(path)


def extra_tensor_in_index(path):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.5.self_attn.q_proj.weight"] = "model-00001-of-00003.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def corrupt_shard(path):
    next(path.glob("model-00001-*.safetensors")).write_bytes(b"\x00" * 16)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (None, "already exists"),
        (break_config, "Cannot read"),
        (drop_a_shard, "model-00002-of-00003.safetensors, which is missing"),
        (
            llama_checkpoint,
            "holds a 'llama' checkpoint; convert rewrites \\['deci', 'gpt_oss_puzzle', 'nemotron-nas', 'nemotron_h_puzzle'\\] checkpoints and AnyModel",
        ),
        (corrupt_shard, "Cannot read the safetensors header"),
        (lambda path: (path / "config.json").unlink(), "has no config.json"),
    ],
)
def test_convert_errors_leave_no_partial_output(tmp_path, damage, message):
    source = tmp_path / "src"
    if damage is llama_checkpoint:
        llama_checkpoint(source)
    else:
        write_nemotron_checkpoint(source)
        if damage is not None:
            damage(source)
    destination = tmp_path / ("src" if damage is None else "out")
    before = sorted(path.name for path in tmp_path.iterdir())
    result = runner.invoke(app, ["convert", str(source), str(destination)])
    assert result.exit_code == 1
    assert (
        "Error:" in result.output
        and message.replace("\\", "") in result.output.replace("\n", " ")
        or (pytest.fail(result.output))
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no destination, no staging directory


def test_inspect_shows_every_layer_kind_of_a_nemotron_checkpoint(nemotron):
    result = runner.invoke(app, ["inspect", str(nemotron), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line[:1].isdigit()]
    kinds = {0: "skipped", -1: "linear"}
    assert [row[1] for row in rows] == [kinds.get(layer.kv_heads, "attention") for layer in NEMOTRON_LAYERS]
    assert [row[2] for row in rows] == [kinds.get(layer.ffn_width, "mlp") for layer in NEMOTRON_LAYERS]
    assert [row[-2] for row in rows] == [f"{2 * max(layer.kv_heads, 0) * HEAD_DIM * 4:,}" for layer in NEMOTRON_LAYERS]
    assert "model_type nemotron-nas, 8 layers" in result.output


def test_inspect_refuses_an_unknown_dtype(nemotron):
    result = runner.invoke(app, ["inspect", str(nemotron), "--dtype=float5x"])
    assert result.exit_code == 1 and "unknown dtype 'float5x'" in result.output


@pytest.mark.parametrize("name", ["my-modell", "./my-modell", "org/my-modell"])
def test_inspect_of_a_missing_path_fails_at_once_without_the_hub(tmp_path, monkeypatch, name):
    from transformers.utils import hub

    def no_hub(*args, **kwargs):
        pytest.fail(f"inspect asked the Hub for {args}")

    monkeypatch.setattr(hub, "cached_files", no_hub)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["inspect", name])
    assert result.exit_code == 1
    assert f"Error: {Path(name)} does not exist. `inspect` reads a local checkpoint directory" in result.output


def test_inspect_of_a_folder_without_config_json_says_so(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Error: {tmp_path} has no config.json" in result.output.replace("\n", "")


def kv_column(output: str) -> list[str]:
    return [line.split()[-2] for line in output.splitlines() if line[:1].isdigit()]


def test_inspect_reports_kv_bytes_in_the_checkpoint_dtype(tmp_path):
    config = LlamaConfig(**TINY, per_layer_config={1: {"num_key_value_heads": 1}})  # 3 layers: 2, 1, 2 KV heads
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]

    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "KV cache in bfloat16 (the dtype in config.json" in result.output
    assert kv_column(result.output) == [f"{2 * kv * head_dim * 2:,}" for kv in (2, 1, 2)]  # 2 bytes per element

    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["dtype"]  # older checkpoints: upstream then takes the dtype of the weights
    (tmp_path / "config.json").write_text(json.dumps(saved))
    result = runner.invoke(app, ["inspect", str(tmp_path / "config.json")])
    assert result.exit_code == 0, result.output
    assert "KV cache in bfloat16 (the dtype of the weights in model.safetensors" in result.output
    (tmp_path / "model.safetensors").unlink()
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert "KV cache in float32 (torch's default dtype" in result.output

    result = runner.invoke(app, ["inspect", str(tmp_path), "--dtype", "float16"])
    assert "KV cache in float16 (--dtype" in result.output
    assert kv_column(result.output) == [f"{2 * kv * head_dim * 2:,}" for kv in (2, 1, 2)]


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert all(command in result.output for command in ("demo", "inspect", "convert"))
    assert "--copy" in runner.invoke(app, ["convert", "--help"]).output


def gpt_oss_puzzle_without_a_window(path):
    config = gpt_oss_puzzle_config()
    config["block_configs"][0] = {"num_local_experts": 4}
    return write_gpt_oss_puzzle_checkpoint(path, config=config)


# Every fixture of a natively loading family: (writer, stock class of the canonical form, load arguments, tensors the
# stock model would not accept, so that `convert` needs --drop-unused-tensors).
FIXTURES = {
    "nemotron-nas": (write_nemotron_checkpoint, "LlamaForCausalLM", {}, False),
    "nemotron-nas-fp8-kv-scales": (
        lambda path: write_nemotron_checkpoint(path, with_kv_scales=True),
        "LlamaForCausalLM",
        {},
        True,
    ),
    "deci": (write_deci_checkpoint, "LlamaForCausalLM", {}, False),
    "modelopt-nov2025": (lambda path: write_modelopt_checkpoint(path, "nov2025"), "LlamaForCausalLM", {}, False),
    "modelopt-jan2026": (lambda path: write_modelopt_checkpoint(path, "jan2026"), "LlamaForCausalLM", {}, False),
    "gpt-oss-puzzle-bf16": (write_gpt_oss_puzzle_checkpoint, "GptOssForCausalLM", {}, True),
    "gpt-oss-puzzle-mxfp4": (
        lambda path: write_gpt_oss_puzzle_checkpoint(path, mxfp4=True),
        "GptOssForCausalLM",
        {},
        True,
    ),
    "gpt-oss-puzzle-no-window": (gpt_oss_puzzle_without_a_window, "GptOssForCausalLM", {}, True),
    "anymodel-llama": (write_anymodel_llama_checkpoint, "LlamaForCausalLM", {}, False),
    "anymodel-gpt-oss": (write_anymodel_gpt_oss_checkpoint, "GptOssForCausalLM", {}, False),
    "anymodel-gpt-oss-mxfp4": (
        lambda path: write_anymodel_gpt_oss_checkpoint(path, mxfp4=True),
        "GptOssForCausalLM",
        {},
        False,
    ),
    "nemotron-h-puzzle": (write_nemotron_h_puzzle_checkpoint, "NemotronHForCausalLM", {}, False),
    "nemotron-h-puzzle-latent-mtp": (
        lambda path: write_nemotron_h_puzzle_checkpoint(path, "latent_mtp"),
        "NemotronHForCausalLM",
        {},
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_convert_gives_a_stock_checkpoint_with_bit_equal_logits(name, tmp_path):
    write, stock_class, load_kwargs, needs_drop = FIXTURES[name]
    source = write(tmp_path / "src")
    if needs_drop:
        with pytest.raises(ConversionError, match=r"tensors that .* read and do not use .* --drop-unused-tensors"):
            convert_checkpoint(source, tmp_path / "refused", progress=lambda line: None)
        assert not (tmp_path / "refused").exists()
    arguments = ["convert", str(source), str(tmp_path / "out")] + (["--drop-unused-tensors"] if needs_drop else [])
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    load_kwargs = {"dtype": torch.float32, "attn_implementation": "eager", **load_kwargs}
    converted, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True, **load_kwargs)
    assert type(converted).__name__ == stock_class
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    original = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(converted.eval(), ids), logits(original.eval(), ids))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_inspect_runs_on_every_fixture(name, tmp_path):
    source = FIXTURES[name][0](tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    num_layers = len(config.get("block_configs") or config.get("num_key_value_heads_per_layer"))
    result = runner.invoke(app, ["inspect", str(source)])
    assert result.exit_code == 0, result.output
    assert f"model_type {config['model_type']}, {num_layers} layers" in result.output
    assert len([line for line in result.output.splitlines() if line[:1].isdigit()]) == num_layers


def test_the_guide_shows_the_real_inspect_output(nemotron):
    guide = (Path(__file__).resolve().parents[2] / "docs" / "source" / "en" / "heterogeneity.md").read_text()
    sample = guide.split("`transformers-heterogeneity inspect path/to/nemotron` prints:\n\n```text\n", 1)[1]
    sample = sample.split("\n```", 1)[0]
    result = runner.invoke(app, ["inspect", str(nemotron)])
    assert result.exit_code == 0, result.output
    assert result.output.replace(str(nemotron), "path/to/nemotron").rstrip("\n") == sample
