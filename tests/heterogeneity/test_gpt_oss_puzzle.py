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
"""gpt-oss-puzzle checkpoints load natively: `block_configs` become per-layer experts and windows, the fp8 KV scales are
consumed, and the model computes what stock GPT-OSS layers built from each layer's values compute."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
from transformers.heterogeneity import HeterogeneousConfigError, kv_cache_bytes
from transformers.heterogeneity.inspection import summarize_config
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

from .checkpoints import load_logged
from .gpt_oss_checkpoints import (
    MXFP4_CONFIG,
    PUZZLE_BLOCKS,
    PUZZLE_GLOBALS,
    PUZZLE_LAYER_TYPES,
    PUZZLE_PER_LAYER,
    puzzle_config,
    write_puzzle_checkpoint,
)
from .test_gpt_oss import Reference


pytestmark = pytest.mark.usefixtures("single_thread")

REFERENCE_GLOBALS = {**PUZZLE_GLOBALS, "layer_types": PUZZLE_LAYER_TYPES}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_puzzle_checkpoint(tmp_path_factory.mktemp("gpt-oss-puzzle"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_logged(checkpoint, dtype=torch.float32, attn_implementation="eager")


def input_ids(seq_len=9, batch_size=2):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, PUZZLE_GLOBALS["vocab_size"], (batch_size, seq_len), generator=generator)


def test_loads_natively_with_every_tensor_consumed(checkpoint, loaded):
    model, info, log = loaded
    assert type(model).__name__ == "GptOssPuzzleForCausalLM"
    assert f"GptOssPuzzleForCausalLM: the checkpoint's {2 * len(PUZZLE_BLOCKS)} fp8 KV-cache scales" in log
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    on_disk = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        on_disk.update(load_file(shard))
    scales = {name for name in on_disk if name.endswith(("self_attn.k_scale", "self_attn.v_scale"))}
    assert len(scales) == 2 * len(PUZZLE_BLOCKS)
    state = model.state_dict()
    assert set(state) == set(on_disk) - scales
    for name, tensor in state.items():
        assert torch.equal(tensor, on_disk[name].float()), name


def test_block_configs_become_per_layer_config(loaded):
    model = loaded[0]
    config = model.config
    assert config.layer_types == PUZZLE_LAYER_TYPES
    assert config._heterogeneity_spec.per_layer_overrides == PUZZLE_PER_LAYER
    for layer, block in zip(model.model.layers, PUZZLE_BLOCKS):
        assert layer.mlp.experts.num_experts == block["num_local_experts"]
        assert layer.self_attn.sliding_window == block["sliding_window"]
    assert [size.window for size in kv_cache_bytes(config)] == [block["sliding_window"] for block in PUZZLE_BLOCKS]


def test_logits_and_greedy_generation_match_stock_layers(loaded):
    model = loaded[0]
    reference = Reference(model, PUZZLE_PER_LAYER, REFERENCE_GLOBALS)
    prompt = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(prompt).logits, reference.logits(prompt), atol=1e-5, rtol=1e-5)
    generated = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, reference.greedy(prompt, 4))
    for cache_implementation in ("dynamic", "static"):
        cached = model.generate(prompt, max_new_tokens=4, do_sample=False, cache_implementation=cache_implementation)
        assert torch.equal(cached, generated), cache_implementation


def test_cache_keeps_each_layers_window(loaded):
    model = loaded[0]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids(seq_len=9), past_key_values=cache, use_cache=True)
    assert [layer.keys.shape[2] for layer in cache.layers] == [9, 3, 3, 7]


def test_save_pretrained_keeps_the_source_format_and_is_bit_exact(loaded, tmp_path):
    model = loaded[0]
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gpt_oss_puzzle"
    assert saved["block_configs"] == list(PUZZLE_BLOCKS)
    assert "per_layer_config" not in saved and saved["layer_types"] is None
    assert saved["auto_map"] == puzzle_config()["auto_map"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    prompt = input_ids()
    with torch.no_grad():
        assert torch.equal(model(prompt).logits, reloaded(prompt).logits)


def with_blocks(**changes) -> dict:
    config = puzzle_config()
    for layer_idx, block in changes.items():
        config["block_configs"][int(layer_idx[1:])] = block
    return config


@pytest.mark.parametrize(
    ("config_dict", "message"),
    [
        (with_blocks(l2={"num_local_experts": 2, "sliding_window": 4, "sparsify": True}), r"layer 2: `sparsify`=True"),
        (with_blocks(l1={"num_local_experts": 0, "sliding_window": 4}), r"layer 1: `num_local_experts`=0"),
        (with_blocks(l3={"num_local_experts": 2, "sliding_window": -8}), r"layer 3: `sliding_window`=-8"),
        (with_blocks(l0={"sliding_window": None}), r"layer 0: the block config has no `num_local_experts`"),
        ({**puzzle_config(), "num_hidden_layers": 3}, r"`block_configs` has 4 entries but `num_hidden_layers` is 3"),
        ({**puzzle_config(), "per_layer_config": {1: {"num_local_experts": 2}}}, r"does not take `per_layer_config`"),
    ],
)
def test_malformed_blocks_are_refused_naming_layer_and_field(config_dict, message):
    config_dict = dict(config_dict)
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)


def test_mxfp4_kernels_are_refused_with_per_layer_experts():
    """MXFP4 kernels rebuild the experts from the global config: a file that asks for them is refused."""
    config_dict = {**puzzle_config(), "quantization_config": {**MXFP4_CONFIG, "dequantize": False}}
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    with pytest.raises(HeterogeneousConfigError, match=r"Layer 2: `num_local_experts`=2 .* mxfp4-quantized"):
        AutoModelForCausalLM.from_config(config)


def test_mxfp4_experts_load_dequantized_and_save_as_floats(tmp_path):
    """The release loads as it is (no `quantization_config` argument, no `accelerate`: the dequantizing path does not
    need it), each layer's experts are upstream's dequantization of its own blocks, and the saved model holds the
    float parameters under their own names, reloading bit-exact."""
    path = write_puzzle_checkpoint(tmp_path / "mxfp4", mxfp4=True, num_shards=2)
    model, info, _ = load_logged(path, dtype=torch.float32, attn_implementation="eager")
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    on_disk = load_file(next(path.glob("*00001-of-*.safetensors"))) | load_file(next(path.glob("*00002-of-*")))
    for layer_idx, (layer, block) in enumerate(zip(model.model.layers, PUZZLE_BLOCKS)):
        for proj in ("gate_up_proj", "down_proj"):
            prefix = f"model.layers.{layer_idx}.mlp.experts.{proj}"
            expected = convert_moe_packed_tensors(on_disk[f"{prefix}_blocks"], on_disk[f"{prefix}_scales"])
            assert expected.shape[0] == block["num_local_experts"]
            assert torch.equal(getattr(layer.mlp.experts, proj), expected.float()), prefix
    reference = Reference(model, PUZZLE_PER_LAYER, REFERENCE_GLOBALS)
    prompt = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(prompt).logits, reference.logits(prompt), atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path / "saved")
    saved = {}
    for shard in (tmp_path / "saved").glob("*.safetensors"):
        saved.update(load_file(shard))
    assert "model.layers.2.mlp.experts.gate_up_proj" in saved
    assert not [name for name in saved if name.endswith(("_blocks", "_scales"))]
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    reloaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path / "saved", dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    with torch.no_grad():
        assert torch.equal(reloaded(prompt).logits, model(prompt).logits)
    assert torch.equal(reloaded.generate(prompt, max_new_tokens=3), model.generate(prompt, max_new_tokens=3))


def test_the_released_mxfp4_config_is_saved_as_released(tmp_path):
    """Dequantizing by default is a loading choice, not written into the source format."""
    config_dict = {**puzzle_config(), "quantization_config": MXFP4_CONFIG}
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    assert config.quantization_config["dequantize"] is True
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"] == MXFP4_CONFIG


def test_inspection_shows_each_layers_experts_and_window(checkpoint):
    summary = summarize_config(AutoConfig.from_pretrained(checkpoint), dtype=torch.bfloat16)
    assert [layer.kind("mlp") for layer in summary.layers] == ["moe"] * 4
    assert [layer.num_experts for layer in summary.layers] == [block["num_local_experts"] for block in PUZZLE_BLOCKS]
    assert [layer.window for layer in summary.layers] == [block["sliding_window"] for block in PUZZLE_BLOCKS]
    assert {layer.intermediate_size for layer in summary.layers} == {PUZZLE_GLOBALS["intermediate_size"]}
    # Two experts of [hidden, 2 x width] and [width, hidden] run per token, whatever the layer's expert count.
    hidden, width = PUZZLE_GLOBALS["hidden_size"], PUZZLE_GLOBALS["intermediate_size"]
    expert_flops = 2 * PUZZLE_GLOBALS["num_experts_per_tok"] * (hidden * 2 * width + width * hidden)
    attention_flops = 2 * (2 * hidden * 64 + 2 * hidden * 32)  # q and o: 4 x 16 wide; k and v: 2 x 16
    assert {layer.flops_per_token for layer in summary.layers} == {expert_flops + attention_flops}


def test_a_block_without_sliding_window_is_full_attention(loaded, tmp_path):
    """The release's readers take `sliding_window` with `.get`: an absent field is a full-attention layer."""
    config = puzzle_config()
    config["block_configs"][0] = {"num_local_experts": 4}
    model, info, _ = load_logged(
        write_puzzle_checkpoint(tmp_path / "no-window", config=config),
        dtype=torch.float32,
        attn_implementation="eager",
    )
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert model.config.layer_types == PUZZLE_LAYER_TYPES
    assert model.model.layers[0].self_attn.sliding_window is None
    prompt = input_ids()
    with torch.no_grad():
        assert torch.equal(model(prompt).logits, loaded[0](prompt).logits)
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["block_configs"][0] == {"num_local_experts": 4}
