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
"""The `transformers-heterogeneity` command line: the demo in process, and the installed console script."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transformers import AutoModelForCausalLM, LlamaForCausalLM
from transformers.heterogeneity.commands.cli import app
from transformers.heterogeneity.commands.demo import DEMO_PER_LAYER_CONFIG, demo_configs


runner = CliRunner()


def saved_to(output: str) -> Path:
    return Path(re.search(r"Saved to (.+): \d+ safetensors shards", output).group(1))


@pytest.fixture(scope="module")
def demo_result():
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    return result


def test_demo_reports_the_round_trip_and_generation(demo_result):
    output = demo_result.output
    assert "logits equal the original's bit for bit" in output
    assert "cached and uncached decoding agree" in output
    generated = re.search(r"Generated token ids: \[([\d, ]+)\]", output).group(1).split(", ")
    assert len(generated) == 8


def test_demo_says_what_it_does_before_each_slow_step(demo_result):
    """The imports and generation take seconds on a cold machine: a line comes first, never silence."""
    lines = demo_result.output.splitlines()
    assert lines[0] == "Loading torch and Transformers..."
    generating = next(idx for idx, line in enumerate(lines) if "generating 8 tokens greedily" in line)
    assert lines[generating + 1].startswith("[5/5] Greedy generation")


def test_make_install_announces_every_step_and_lets_pip_report_progress(tmp_path):
    """`make install` on a fresh machine runs for minutes: every step is announced before it starts, and the two
    long installs (torch, the package with transformers) are not `--quiet`, so pip reports each package."""
    repository = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        ["make", "--dry-run", "install", f"VENV={tmp_path / 'venv'}"],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    commands = [line for line in completed.stdout.splitlines() if not line.startswith("#")]
    steps = [idx for idx, line in enumerate(commands) if line.startswith('echo "==> [install ')]
    assert len(steps) == 4
    for step, next_step in zip(steps, steps[1:] + [len(commands)]):
        assert any("python" in line for line in commands[step + 1 : next_step]), commands[step:next_step]
    long_installs = [line for line in commands if "pip install" in line and ("torch==" in line or "-e " in line)]
    assert len(long_installs) == 2 and not any("--quiet" in line for line in long_installs), long_installs


def test_demo_table_and_totals_match_the_built_models(demo_result):
    output = demo_result.output
    base_config, config = demo_configs()
    model, base_model = LlamaForCausalLM(config), LlamaForCausalLM(base_config)

    table = output[output.index("Per-layer table") : output.index("Against the homogeneous")].splitlines()
    layer_rows = [line.split() for line in table if line[:1].isdigit()]
    assert [row[8] for row in layer_rows] == [
        f"{sum(p.numel() for p in layer.parameters()):,}" for layer in model.model.layers
    ]
    assert [row[1] for row in layer_rows] == [
        "skipped" if "attention" in DEMO_PER_LAYER_CONFIG.get(idx, {}).get("skip", []) else "attention"
        for idx in range(config.num_hidden_layers)
    ]

    total, base_total = (sum(p.numel() for p in m.parameters()) for m in (model, base_model))
    parameters_row = re.search(r"^parameters +(.+)$", output, re.MULTILINE).group(1).split()
    assert parameters_row == [f"{base_total:,}", f"{total:,}", f"{100 * (base_total - total) / base_total:.1f}%"]

    # float32 KV cache: 2 tensors (keys, values) * kv_heads * head_dim * 4 bytes per token, per attention layer.
    head_dim = base_config.hidden_size // base_config.num_attention_heads
    kv_bytes = 0
    for idx in range(config.num_hidden_layers):
        overrides = DEMO_PER_LAYER_CONFIG.get(idx, {})
        if "attention" not in overrides.get("skip", []):
            kv_bytes += 2 * overrides.get("num_key_value_heads", base_config.num_key_value_heads) * head_dim * 4
    base_kv_bytes = 2 * base_config.num_key_value_heads * head_dim * 4 * base_config.num_hidden_layers
    kv_row = re.search(r"^KV bytes/token \(float32\) +(.+)$", output, re.MULTILINE).group(1).split()
    assert kv_row == [
        f"{base_kv_bytes:,}",
        f"{kv_bytes:,}",
        f"{100 * (base_kv_bytes - kv_bytes) / base_kv_bytes:.1f}%",
    ]


def test_demo_deletes_its_temporary_checkpoint(demo_result):
    assert not saved_to(demo_result.output).exists()
    assert "Deleted the temporary checkpoint" in demo_result.output


def test_demo_keep_leaves_the_temporary_checkpoint(tmp_path):
    result = runner.invoke(app, ["demo", "--keep"])
    assert result.exit_code == 0, result.output
    checkpoint = saved_to(result.output)
    try:
        assert (checkpoint / "model.safetensors.index.json").is_file()
        assert f"Checkpoint kept in {checkpoint}" in result.output
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)


def test_demo_output_dir_holds_a_sharded_heterogeneous_checkpoint(tmp_path):
    output_dir = tmp_path / "nested" / "demo"
    result = runner.invoke(app, ["demo", "--output-dir", str(output_dir)])
    assert result.exit_code == 0, result.output

    index = json.loads((output_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((output_dir / shard).is_file() for shard in shards)
    saved = json.loads((output_dir / "config.json").read_text())["per_layer_config"]
    assert {int(layer): overrides for layer, overrides in saved.items()} == DEMO_PER_LAYER_CONFIG

    reloaded = AutoModelForCausalLM.from_pretrained(output_dir)
    assert type(reloaded.model.layers[3].self_attn).__name__ == "SkippedLlamaAttention"
    assert "model.layers.3.self_attn.q_proj.weight" not in index["weight_map"]

    # `inspect` of the saved checkpoint shows the demo's own table: same dtype (the checkpoint's), same KV bytes
    inspected = runner.invoke(app, ["inspect", str(output_dir)])
    assert inspected.exit_code == 0, inspected.output
    demo_table = result.output[result.output.index("Per-layer table") :].splitlines()[1:13]
    assert demo_table == inspected.output.splitlines()[2:14]


def test_no_arguments_shows_the_commands():
    result = runner.invoke(app, [])
    assert "demo" in result.output and "Usage" in result.output


def test_demo_help_lists_its_options():
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "--output-dir" in result.output and "--keep" in result.output


@pytest.mark.overlay_only
def test_installed_console_script_runs():
    script = Path(sys.executable).parent / "transformers-heterogeneity"
    assert script.is_file(), f"{script} is missing: install the package with `pip install -e .`"
    completed = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "Per-layer heterogeneous models" in completed.stdout
    assert re.search(r"^\s*│?\s*demo\s", completed.stdout, re.MULTILINE), completed.stdout


def test_cli_imports_neither_torch_nor_the_modeling_code():
    code = (
        "import sys\n"
        "import transformers.heterogeneity.commands.cli\n"
        "print(sorted(m for m in ('torch', 'transformers.modeling_utils') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
