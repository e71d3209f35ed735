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
"""`convert SRC DST --to FAMILY`: every export loads back through the family's native loader as the same model.

The reference is the model before export (built here, or loaded from a fixture written in the released format
without this package). Widths are checked with the readers' formula written out here, never the package's.
"""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from transformers import AutoModelForCausalLM, GptOssConfig, LlamaConfig, NemotronHConfig, Qwen3Config
from transformers.heterogeneity.commands.cli import app
from transformers.heterogeneity.export import ExportError, export_checkpoint

from .checkpoints import NEMOTRON_LAYERS, VOCAB, write_deci_checkpoint, write_nemotron_checkpoint
from .conftest import randomize_weights
from .gpt_oss_checkpoints import PUZZLE_BLOCKS
from .gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle
from .nemotron_h_models import make_config as nemotron_h_config
from .nemotron_h_models import randomize_weights as randomize_nemotron_h
from .nemotron_h_puzzle_checkpoint import VARIANTS, puzzle_tensors
from .nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle


runner = CliRunner()
IDS = torch.tensor([[3, 17, 42, 5, 9, 33], [8, 1, 60, 27, 14, 2]])


def readers_width(ffn_mult: float, hidden: int) -> int:
    """The FFN width every Nemotron-NAS reader computes (vLLM, SGLang, TensorRT-LLM `_ffn_mult_to_intermediate_size`)."""
    width = int(2 * ffn_mult * hidden / 3)
    return width if width % 256 == 0 else width + 256 - width % 256


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def greedy(model, ids=IDS, steps=8):
    return model.generate(ids, max_new_tokens=steps, do_sample=False, min_new_tokens=steps)


def load(path, **kwargs):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()


def llama_child(path: Path, per_layer: dict, intermediate_size: int = 600, shard="300KB") -> torch.nn.Module:
    """A Llama child built here (per-layer widths, KV heads, skipped and linear sub-blocks), saved in shards."""
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=intermediate_size,
        num_hidden_layers=len(per_layer) + 1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        bos_token_id=None,
        eos_token_id=None,
        per_layer_config=per_layer,
    )
    model = randomize_weights(AutoModelForCausalLM.from_config(config)).eval()
    model.save_pretrained(path, max_shard_size=shard)
    return model


ALL_KINDS = {
    0: {"intermediate_size": 512, "num_key_value_heads": 1},
    1: {"skip": ["attention"]},
    2: {"skip": ["attention_replaced_by_linear", "mlp_replaced_by_linear"]},
    3: {"skip": ["mlp"], "num_key_value_heads": 4},
    4: {"skip": ["attention", "mlp"]},
}


def test_llama_child_exports_to_nemotron_nas_bit_exact(tmp_path):
    model = llama_child(tmp_path / "child", ALL_KINDS, intermediate_size=768)
    result = runner.invoke(app, ["convert", str(tmp_path / "child"), str(tmp_path / "nas"), "--to", "nemotron-nas"])
    assert result.exit_code == 0, result.output
    assert "Note:" not in result.output  # nothing padded

    config = json.loads((tmp_path / "nas" / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and config["architectures"] == ["DeciLMForCausalLM"]
    assert config["intermediate_size"] is None and config["num_key_value_heads"] is None
    assert config["auto_map"]["AutoConfig"] == "configuration_decilm.DeciLMConfig"
    assert "per_layer_config" not in config and "rope_theta" in config and "rope_parameters" not in config
    blocks = config["block_configs"]
    # Every field of the released schema, in every block (the fixture's literal field sets).
    assert all(set(block["attention"]) == set(NEMOTRON_LAYERS[0].block["attention"]) for block in blocks)
    assert all(set(block["ffn"]) == set(NEMOTRON_LAYERS[0].block["ffn"]) for block in blocks)
    assert [block["attention"]["n_heads_in_group"] for block in blocks] == [4, None, None, 1, None, 2]
    assert [block["attention"]["no_op"] for block in blocks] == [False, True, False, False, True, False]
    assert [block["attention"]["replace_with_linear"] for block in blocks] == [False, False, True, False, False, False]
    assert [block["ffn"]["no_op"] for block in blocks] == [False, False, False, True, True, False]
    assert [block["ffn"]["replace_with_linear"] for block in blocks] == [False, False, True, False, False, False]
    widths = [readers_width(block["ffn"]["ffn_mult"], 256) if block["ffn"]["ffn_mult"] else 0 for block in blocks]
    assert widths == [512, 768, 0, 0, 0, 768]

    exported = load(tmp_path / "nas")
    assert type(exported).__name__ == "DeciLMForCausalLM"
    assert torch.equal(logits(exported), logits(model))
    assert torch.equal(greedy(exported), greedy(model))


def test_width_no_ffn_mult_expresses_is_padded_with_zero_channels(tmp_path):
    model = llama_child(tmp_path / "child", {0: {"intermediate_size": 300}, 1: {"intermediate_size": 1000}})
    result = runner.invoke(app, ["convert", str(tmp_path / "child"), str(tmp_path / "nas"), "--to", "nemotron-nas"])
    assert result.exit_code == 0, result.output
    assert "layer 0: FFN width 300 is not a multiple of 256" in result.output and "padded to 512" in result.output
    assert "layer 2: FFN width 600" in result.output and "padded to 768" in result.output

    blocks = json.loads((tmp_path / "nas" / "config.json").read_text())["block_configs"]
    assert [readers_width(block["ffn"]["ffn_mult"], 256) for block in blocks] == [512, 1024, 768]
    exported = load(tmp_path / "nas")
    gate = exported.model.layers[0].mlp.gate_proj.weight
    assert (
        gate.shape == (512, 256)
        and not gate[300:].any()
        and torch.equal(gate[:300], model.model.layers[0].mlp.gate_proj.weight)
    )
    assert not exported.model.layers[0].mlp.down_proj.weight[:, 300:].any()
    torch.testing.assert_close(logits(exported), logits(model), rtol=1e-5, atol=1e-5)
    assert torch.equal(greedy(exported), greedy(model))
    readme = (tmp_path / "nas" / "README.md").read_text()
    assert "padded to 512 with zero channels" in readme


@pytest.mark.parametrize("hidden", [256, 512, 2880, 4096, 5120, 8192])
def test_ffn_mult_gives_back_every_multiple_of_256(hidden):
    from transformers.heterogeneity.export.nemotron_nas import ffn_mult_for_width

    for width in range(256, 8 * hidden + 1, 256):
        assert readers_width(ffn_mult_for_width(width, hidden), hidden) == width
    assert ffn_mult_for_width(14336, 8192) == 2.625  # as Llama-3.1-Nemotron-51B writes it


def test_released_nemotron_nas_and_deci_checkpoints_export_unchanged(tmp_path):
    source = write_nemotron_checkpoint(tmp_path / "nemotron")
    export_checkpoint(source, tmp_path / "nas", to="nemotron-nas", progress=lambda line: None)
    blocks = json.loads((tmp_path / "nas" / "config.json").read_text())["block_configs"]
    expected = [max(layer.ffn_width, 0) for layer in NEMOTRON_LAYERS]  # the fixture's literal widths
    assert [readers_width(b["ffn"]["ffn_mult"], 512) if b["ffn"]["ffn_mult"] else 0 for b in blocks] == expected
    assert [b["attention"] for b in blocks] == [layer.block["attention"] for layer in NEMOTRON_LAYERS]
    assert torch.equal(logits(load(tmp_path / "nas")), logits(load(source)))

    deci = write_deci_checkpoint(tmp_path / "deci")
    export_checkpoint(deci, tmp_path / "deci-nas", to="nemotron-nas", progress=lambda line: None)
    blocks = json.loads((tmp_path / "deci-nas" / "config.json").read_text())["block_configs"]
    assert [block["attention"]["n_heads_in_group"] for block in blocks] == [1, 2, 4, 2]  # KV heads 4, 2, 1, 2
    exported, reference = load(tmp_path / "deci-nas"), load(deci)
    assert torch.equal(logits(exported), logits(reference))
    assert torch.equal(greedy(exported), greedy(reference))


@pytest.mark.parametrize("value", ['"4"', "4.0", "null"])
def test_an_unreadable_config_is_one_export_error(tmp_path, value):
    source = write_nemotron_checkpoint(tmp_path / "src")
    text = (source / "config.json").read_text()
    (source / "config.json").write_text(re.sub(r'"num_hidden_layers": \d+', f'"num_hidden_layers": {value}', text))
    with pytest.raises(ExportError, match="Cannot read .*num_hidden_layers"):
        export_checkpoint(source, tmp_path / "out", to="nemotron-nas", progress=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_gpt_oss_exports_to_gpt_oss_puzzle(tmp_path):
    config = GptOssConfig(
        hidden_size=64,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=VOCAB,
        sliding_window=4,
        layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        per_layer_config={1: {"num_local_experts": 2}, 2: {"sliding_window": 8, "num_local_experts": 3}},
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path / "child")
    lines = []
    export_checkpoint(tmp_path / "child", tmp_path / "puzzle", to="gpt_oss_puzzle", progress=lines.append)
    saved = json.loads((tmp_path / "puzzle" / "config.json").read_text())
    assert saved["model_type"] == "gpt_oss_puzzle" and saved["architectures"] == ["GptOssPuzzleForCausalLM"]
    assert saved["block_configs"] == [
        {"num_local_experts": 4, "sliding_window": None},
        {"num_local_experts": 2, "sliding_window": 4},
        {"num_local_experts": 3, "sliding_window": 8},
        {"num_local_experts": 4, "sliding_window": None},
    ]
    assert any(line.startswith("vLLM: runs it as written") for line in lines)
    assert any(line.startswith("llama.cpp: does not run it") for line in lines)
    exported = load(tmp_path / "puzzle")
    assert type(exported).__name__ == "GptOssPuzzleForCausalLM"
    assert torch.equal(logits(exported), logits(model))
    assert torch.equal(greedy(exported), greedy(model))


def test_released_gpt_oss_puzzle_exports_unchanged(tmp_path):
    source = write_gpt_oss_puzzle(tmp_path / "src")
    export_checkpoint(source, tmp_path / "out", to="gpt_oss_puzzle", progress=print, drop_unused=True)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["block_configs"] == [dict(block) for block in PUZZLE_BLOCKS]
    assert torch.equal(logits(load(tmp_path / "out")), logits(load(source)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_released_nemotron_h_puzzle_exports_with_released_names(tmp_path, variant):
    source = write_nemotron_h_puzzle(tmp_path / "src", variant)
    export_checkpoint(source, tmp_path / "out", to="nemotron_h_puzzle", progress=print, drop_unused=True)
    names = set()
    for shard in (tmp_path / "out").glob("*.safetensors"):
        with safe_open(shard, framework="pt") as weights:
            names.update(weights.keys())
    assert names == {name for name in puzzle_tensors(variant) if not name.startswith("mtp.")}
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    # As released, up to fields at stock NemotronH's default, which a block reads when it leaves them out.
    defaults = NemotronHConfig().to_dict()

    def with_defaults(block):
        return {**{name: defaults[name] for name in ("routed_scaling_factor", "n_group", "topk_group")}, **block}

    assert [with_defaults(b) for b in saved["block_configs"]] == [
        with_defaults(b) for b in VARIANTS[variant]["blocks"]
    ]
    assert saved["hybrid_override_pattern"] == "ME*EM-E" and "n_routed_experts" not in saved
    assert torch.equal(logits(load(tmp_path / "out")), logits(load(source)))


def test_nemotron_h_child_drops_skipped_blocks(tmp_path):
    blocks = ["linear_attention", "moe", "full_attention", "mlp", "moe"]
    per_layer = {
        1: {"n_routed_experts": 6, "moe_latent_size": 16},
        3: {"skip": ["mixer"]},
        4: {"num_experts_per_tok": 3},
    }
    model = randomize_nemotron_h(AutoModelForCausalLM.from_config(nemotron_h_config(blocks, per_layer)))
    model.save_pretrained(tmp_path / "child")
    lines = []
    export_checkpoint(tmp_path / "child", tmp_path / "out", to="nemotron_h_puzzle", progress=lines.append)
    assert "Note: block 3 is skipped (it computes x + 0): left out, and the blocks after it renumbered." in lines
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["hybrid_override_pattern"] == "ME*E" and saved["num_hidden_layers"] == 4
    assert [block.get("moe_latent_size") for block in saved["block_configs"]] == [None, 16, None, None]
    assert [block.get("n_routed_experts") for block in saved["block_configs"]] == [None, 6, None, 4]
    exported = load(tmp_path / "out", attn_implementation="eager")  # as the model was built
    assert torch.equal(logits(exported), logits(model))
    assert torch.equal(greedy(exported), greedy(model))


LLAMA_REFUSALS = [
    ({1: {"head_dim": 32}}, "layer 1 has `head_dim`=32"),
    ({0: {"num_attention_heads": 2, "num_key_value_heads": 2}}, "layer 0 has `num_attention_heads`=2"),
    ({1: {"hidden_act": "gelu"}}, "layer 1 has `hidden_act`='gelu'"),
]


@pytest.mark.parametrize("per_layer, message", LLAMA_REFUSALS)
def test_what_nemotron_nas_cannot_express_is_refused_before_writing(tmp_path, per_layer, message):
    llama_child(tmp_path / "child", per_layer)
    result = runner.invoke(app, ["convert", str(tmp_path / "child"), str(tmp_path / "nas"), "--to", "nemotron-nas"])
    assert result.exit_code == 1
    assert message in result.output and "Nothing was written." in result.output
    assert sorted(os.listdir(tmp_path)) == ["child"]


def test_other_refusals_name_the_field(tmp_path):
    gpt_oss = GptOssConfig(
        hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, num_local_experts=2, vocab_size=VOCAB, per_layer_config={1: {"skip": ["attention"]}},
    )  # fmt: skip
    AutoModelForCausalLM.from_config(gpt_oss).save_pretrained(tmp_path / "gpt_oss")
    with pytest.raises(ExportError, match=r"layer 1 has `skip`=\['attention'\], and a gpt_oss_puzzle block has no"):
        export_checkpoint(tmp_path / "gpt_oss", tmp_path / "a", to="gpt_oss_puzzle")
    with pytest.raises(ExportError, match="Cannot export a 'gpt_oss' model to nemotron-nas"):
        export_checkpoint(tmp_path / "gpt_oss", tmp_path / "b", to="nemotron-nas")

    nemotron_h = nemotron_h_config(["full_attention", "moe"], {0: {"num_key_value_heads": 4}})
    AutoModelForCausalLM.from_config(nemotron_h).save_pretrained(tmp_path / "nemotron_h")
    with pytest.raises(ExportError, match="layer 0 has `num_key_value_heads`=4, and a nemotron_h_puzzle block has no"):
        export_checkpoint(tmp_path / "nemotron_h", tmp_path / "c", to="nemotron_h_puzzle")

    qwen3 = Qwen3Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=VOCAB)
    AutoModelForCausalLM.from_config(qwen3).save_pretrained(tmp_path / "qwen3")
    with pytest.raises(ExportError, match="Cannot export a 'qwen3' model to nemotron-nas: .* no QK norm"):
        export_checkpoint(tmp_path / "qwen3", tmp_path / "d", to="nemotron-nas")
    with pytest.raises(ExportError, match="Unknown export format 'llama'"):
        export_checkpoint(tmp_path / "qwen3", tmp_path / "e", to="llama")
    assert sorted(os.listdir(tmp_path)) == ["gpt_oss", "nemotron_h", "qwen3"]


def test_unused_tensors_are_refused_unless_dropped(tmp_path):
    source = write_nemotron_checkpoint(tmp_path / "fp8", with_kv_scales=True)
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "out"), "--to", "nemotron-nas"])
    assert result.exit_code == 1 and "self_attn.k_scale" in result.output and "--drop-unused-tensors" in result.output
    assert not (tmp_path / "out").exists()
    result = runner.invoke(
        app, ["convert", str(source), str(tmp_path / "out"), "--to", "nemotron-nas", "--drop-unused-tensors"]
    )
    assert result.exit_code == 0, result.output
    assert "Leaving out 8 tensors the model does not hold" in result.output  # layers 0, 1, 4, 7: k and v


def test_output_is_a_normal_directory_with_the_readme(tmp_path):
    llama_child(tmp_path / "child", {0: {"skip": ["mlp_replaced_by_linear"]}})
    (tmp_path / "child" / "tokenizer_config.json").write_text("{}")
    runner.invoke(app, ["convert", str(tmp_path / "child"), str(tmp_path / "nas"), "--to", "nemotron-nas"])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "nas").stat().st_mode) == 0o777 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["child", "nas"]  # no staging directory left beside it
    assert (tmp_path / "nas" / "tokenizer_config.json").read_text() == "{}"
    readme = (tmp_path / "nas" / "README.md").read_text()
    assert "- vLLM: does not run it as written. linear FFN (`replace_with_linear`): fails" in readme
    assert "- TensorRT-LLM: runs it as written" in readme
    assert "| no-op FFN in a layer with attention |" in readme  # the family's full table
    result = runner.invoke(app, ["convert", str(tmp_path / "child"), str(tmp_path / "nas"), "--to", "nemotron-nas"])
    assert result.exit_code == 1 and "already exists" in result.output


STREAMING = """
import re, sys
from pathlib import Path
from transformers.heterogeneity.export import export_checkpoint
def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
big, tiny, work = sys.argv[1:]
export_checkpoint(tiny, work + "/warm", to="nemotron-nas", progress=lambda line: None)  # imports, code paths
Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak resident size (VmHWM) starts again from now
resident = status("VmRSS")
export_checkpoint(big, work + "/out", to="nemotron-nas", progress=lambda line: None)
print(status("VmHWM") - resident)
"""


def test_export_holds_one_shard_not_the_model(tmp_path):
    # 8 layers of ~12 MiB each (fp32), one shard per layer: the model is ~100 MiB.
    def save(path, layers, shard):
        config = LlamaConfig(
            hidden_size=512, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=4, vocab_size=VOCAB
        )
        AutoModelForCausalLM.from_config(config).save_pretrained(path, max_shard_size=shard)

    save(tmp_path / "big", 8, "14MB")
    save(tmp_path / "tiny", 1, "5MB")
    shards = list((tmp_path / "big").glob("*.safetensors"))
    model_bytes = sum(shard.stat().st_size for shard in shards)
    assert len(shards) >= 8
    script = subprocess.run(
        [sys.executable, "-c", STREAMING, str(tmp_path / "big"), str(tmp_path / "tiny"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    growth = int(script.stdout.split()[-1])
    # The peak resident memory while exporting, above what the process held before: about one shard (read, then
    # written), never the model (~100 MiB).
    assert growth < model_bytes / 2, (growth, model_bytes)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == len(shards)


def test_interrupted_export_leaves_nothing(tmp_path):
    llama_child(tmp_path / "child", {0: {"intermediate_size": 300}})

    def interrupt_after_the_first_shard(line):
        if line.startswith("[1/"):
            raise KeyboardInterrupt  # what Ctrl-C raises, here between two shards

    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(
            tmp_path / "child", tmp_path / "nas", to="nemotron-nas", progress=interrupt_after_the_first_shard
        )
    assert sorted(os.listdir(tmp_path)) == ["child"]  # neither the destination nor a staging directory


def test_the_command_line_offers_exactly_the_export_formats():
    from transformers.heterogeneity.commands.convert import EXPORT_FAMILIES
    from transformers.heterogeneity.export import EXPORT_FORMATS

    assert sorted(EXPORT_FAMILIES) == sorted(EXPORT_FORMATS)
