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
"""Model-Optimizer AnyModel outputs (a stock `model_type` plus `block_configs`, weights under
`subblocks_safetensors/`) load natively as the stock classes, with the layers their blocks describe.

Llama is compared with the independent reference forward (`reference.py`), GPT-OSS with stock GPT-OSS layers built
from each layer's own homogeneous config (`test_gpt_oss.Reference`).
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM, GptOssForCausalLM, LlamaForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

from .checkpoints import (
    HEAD_DIM,
    LINEAR,
    NEMOTRON_LAYERS,
    NO_OP,
    RMS_EPS,
    VOCAB,
    anymodel_llama_config,
    load_logged,
    nemotron_specs,
    write_anymodel_llama_checkpoint,
)
from .gpt_oss_checkpoints import (
    ANYMODEL_PER_LAYER,
    PUZZLE_BLOCKS,
    PUZZLE_GLOBALS,
    PUZZLE_LAYER_TYPES,
    anymodel_gpt_oss_config,
    write_anymodel_gpt_oss_checkpoint,
)
from .reference import reference_forward, reference_greedy
from .test_gpt_oss import Reference


pytestmark = pytest.mark.usefixtures("single_thread")


def state_of(directory) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted((directory / "subblocks_safetensors").glob("*.safetensors")):
        state.update(load_file(shard))
    return {name: tensor.float() for name, tensor in state.items()}


def input_ids(vocab=VOCAB, seq_len=7, batch_size=2):
    return torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = write_anymodel_llama_checkpoint(tmp_path_factory.mktemp("anymodel-llama"))
    return path, *load_logged(path, dtype=torch.float32)


@pytest.fixture(scope="module")
def gpt_oss(tmp_path_factory):
    path = write_anymodel_gpt_oss_checkpoint(tmp_path_factory.mktemp("anymodel-gpt-oss"))
    return path, *load_logged(path, dtype=torch.float32, attn_implementation="eager")


@pytest.mark.parametrize("fixture", ["llama", "gpt_oss"])
def test_loads_as_the_stock_class_from_subblock_files(fixture, request):
    path, model, info, _ = request.getfixturevalue(fixture)
    assert type(model) is {"llama": LlamaForCausalLM, "gpt_oss": GptOssForCausalLM}[fixture]
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert not list(path.glob("*.safetensors"))  # every weight is under subblocks_safetensors/
    state = state_of(path)
    assert model.state_dict().keys() == state.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_llama_layers_are_built_as_their_blocks_say(llama):
    model = llama[1]
    for idx, (decoder_layer, layer) in enumerate(zip(model.model.layers, NEMOTRON_LAYERS)):
        if layer.kv_heads == NO_OP:
            assert isinstance(decoder_layer.self_attn, SkippedModule), idx
        elif layer.kv_heads == LINEAR:
            assert hasattr(decoder_layer.self_attn, "linear_attn"), idx
        else:
            assert decoder_layer.self_attn.k_proj.out_features == layer.kv_heads * HEAD_DIM, idx
        if layer.ffn_width == NO_OP:
            assert isinstance(decoder_layer.mlp, SkippedModule), idx
        elif layer.ffn_width == LINEAR:
            assert hasattr(decoder_layer.mlp, "linear_mlp"), idx
        else:
            assert decoder_layer.mlp.gate_proj.out_features == layer.ffn_width, idx


def test_llama_logits_and_greedy_generation_match_the_reference(llama):
    path, model = llama[0], llama[1]
    state, ids = state_of(path), input_ids()
    with torch.no_grad():
        expected = reference_forward(state, nemotron_specs(), ids, final_rms_eps=RMS_EPS)
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-4, rtol=1e-4)
    ids = input_ids(seq_len=5)
    expected = reference_greedy(state, nemotron_specs(), ids, 4, final_rms_eps=RMS_EPS)
    for use_cache in (True, False):
        generated = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4, use_cache=use_cache
        )
        assert torch.equal(generated, expected), use_cache


def test_gpt_oss_layers_logits_and_greedy_generation(gpt_oss):
    model = gpt_oss[1]
    assert model.config.layer_types == PUZZLE_LAYER_TYPES
    assert [layer.mlp.experts.num_experts for layer in model.model.layers] == [
        block["num_local_experts"] for block in PUZZLE_BLOCKS
    ]
    # Windows come from the parent's global `sliding_window`: AnyModel's blocks have no window field.
    assert [layer.self_attn.sliding_window for layer in model.model.layers] == [None, 4, 4, 4]
    reference = Reference(model, ANYMODEL_PER_LAYER, {**PUZZLE_GLOBALS, "layer_types": PUZZLE_LAYER_TYPES})
    prompt = input_ids(PUZZLE_GLOBALS["vocab_size"], seq_len=9)
    with torch.no_grad():
        torch.testing.assert_close(model(prompt).logits, reference.logits(prompt), atol=1e-5, rtol=1e-5)
    assert torch.equal(model.generate(prompt, max_new_tokens=4, do_sample=False), reference.greedy(prompt, 4))


@pytest.mark.parametrize("fixture", ["llama", "gpt_oss"])
def test_save_pretrained_reloads_bit_exact(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)[1]
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    written = {"llama": anymodel_llama_config, "gpt_oss": anymodel_gpt_oss_config}[fixture]()
    assert saved["block_configs"] == written["block_configs"]
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    ids = input_ids(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def gpt_oss_with(layer_idx, where, **fields):
    config_dict = copy.deepcopy(anymodel_gpt_oss_config())
    block = config_dict["block_configs"][layer_idx]
    (block["ffn"]["moe"] if where == "moe" else block[where]).update(fields)
    return config_dict


def llama_with(layer_idx, where, **fields):
    config_dict = copy.deepcopy(anymodel_llama_config())
    config_dict["block_configs"][layer_idx][where].update(fields)
    return config_dict


@pytest.mark.parametrize(
    ("config_dict", "message"),
    [
        (llama_with(0, "ffn", moe={"num_local_experts": 8}), r"llama \(AnyModel\) layer 0: `ffn.moe`=.* mixture-of"),
        (llama_with(0, "attention", mamba={"state_dim": 8}), r"llama \(AnyModel\) layer 0: `attention.mamba`="),
        (gpt_oss_with(1, "moe", shared_expert_intermediate_dim=512), r"layer 1: `ffn.moe.shared_expert_.*no shared"),
        (gpt_oss_with(1, "attention", replace_with_linear=True), r"layer 1: `attention.replace_with_linear`=True"),
        (gpt_oss_with(2, "ffn", moe=None, intermediate_size=64), r"layer 2: `ffn.moe`=None.* every GPT-OSS FFN"),
        (gpt_oss_with(2, "moe", num_local_experts=0), r"layer 2: `ffn.moe.num_local_experts`=0 must be a positive"),
        (gpt_oss_with(3, "moe", router_aux_loss_coef=0.1), r"layer 3: `ffn.moe.router_aux_loss_coef`=0.1 is refused"),
        ({**anymodel_gpt_oss_config(), "per_layer_config": {1: {"num_local_experts": 2}}}, r"does not say what"),
        ({**anymodel_llama_config(), "num_hidden_layers": 4}, r"`block_configs` must hold one block per layer \(4\)"),
    ],
)
def test_refused_blocks_name_the_layer_and_field(config_dict, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(**config_dict)


def test_other_configs_are_untouched():
    """No `block_configs`: a homogeneous stock config; an architecture AnyModel support does not cover keeps the field
    as upstream does (an attribute)."""
    config_dict = anymodel_llama_config()
    del config_dict["block_configs"]
    assert not AutoConfig.for_model(**config_dict).is_heterogeneous
    config = AutoConfig.for_model("gemma", block_configs=[{"attention": {}}])
    assert not config.is_heterogeneous and config.block_configs == [{"attention": {}}]


def test_gpt_oss_mxfp4_experts_load_dequantized_with_no_argument(tmp_path):
    """AnyModel keeps gpt-oss's MXFP4 experts; with per-layer expert counts they dequantize on load (no kernels, no
    `accelerate`), each layer's into its own shapes: upstream's dequantization of that layer's blocks."""
    path = write_anymodel_gpt_oss_checkpoint(tmp_path / "mxfp4", mxfp4=True)
    model, info, _ = load_logged(path, dtype=torch.float32, attn_implementation="eager")
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    on_disk = {}
    for shard in (path / "subblocks_safetensors").glob("*.safetensors"):
        on_disk.update(load_file(shard))
    for layer_idx, layer in enumerate(model.model.layers):
        prefix = f"model.layers.{layer_idx}.mlp.experts.gate_up_proj"
        expected = convert_moe_packed_tensors(on_disk[f"{prefix}_blocks"], on_disk[f"{prefix}_scales"])
        assert expected.shape[0] == PUZZLE_BLOCKS[layer_idx]["num_local_experts"]
        assert torch.equal(layer.mlp.experts.gate_up_proj, expected.float()), prefix
