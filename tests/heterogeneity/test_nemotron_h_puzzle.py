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
"""Nemotron-H Puzzle checkpoints in the released format load natively and compute what their blocks say.

The fixtures are written by `nemotron_h_puzzle_checkpoint.py` (released format, with and without LatentMoE and MTP),
and the model is compared with stock NemotronH blocks, each built from a homogeneous config holding the globals plus
that block's own fields, run one by one on the checkpoint's tensors (`nemotron_h_models.py`).
"""

import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError
from transformers.models.nemotron_h.configuration_nemotron_h import NemotronHConfig

from .checkpoints import load_logged, write_checkpoint
from .nemotron_h_models import assert_bit_identical, input_ids, reference_greedy, reference_logits
from .nemotron_h_puzzle_checkpoint import (
    GLOBALS,
    HIDDEN,
    LAYER_TYPES,
    VARIANTS,
    block_values,
    blockwise_members,
    puzzle_config,
    puzzle_tensors,
    to_model_names,
    write_puzzle_checkpoint,
)


pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW_TOKENS = 4


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, variant):
    return write_puzzle_checkpoint(tmp_path_factory.mktemp(f"nemotron_h_puzzle_{variant}"), variant)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_logged(checkpoint, dtype=torch.float32, attn_implementation="eager")


def checkpoint_state(directory) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(shard))
    return {name: tensor.float() for name, tensor in state.items()}


def test_loads_natively_with_every_tensor_consumed(variant, checkpoint, loaded):
    model, info, log = loaded
    assert type(model).__name__ == "NemotronHPuzzleForCausalLM"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    on_disk = checkpoint_state(checkpoint)
    expected = to_model_names(on_disk)
    state = model.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == {
        name: tuple(t.shape) for name, t in expected.items()
    }
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    mtp = sorted(name for name in on_disk if name.startswith("mtp."))
    if VARIANTS[variant]["mtp_blocks"]:
        # Reported, not dropped silently: how many (counted as loaded: one tensor per expert stack), which, and why.
        stacked = {re.sub(r"\.experts\.\d+\.", ".experts.", name) for name in mtp}
        assert f"the checkpoint's {len(stacked)} multi-token-prediction tensors" in log
        assert "builds no MTP layers" in log and mtp[0] in log
    else:
        assert not mtp and "multi-token" not in log


def test_each_block_is_built_as_its_entry_says(variant, loaded):
    """Structure against the format's meaning: the block type picks the mixer, its fields size it; a field the block
    lacks has NemotronH's default (the release deletes blockwise members from the globals)."""
    model = loaded[0]
    assert model.config.layers_block_type == LAYER_TYPES
    defaults = NemotronHConfig()
    for layer, block in zip(model.model.layers, VARIANTS[variant]["blocks"]):
        mixer = layer.mixer
        kind = block["block_type"]
        assert (
            type(mixer).__name__
            == {
                "mamba": "NemotronHMamba2Mixer",
                "attention": "NemotronHAttention",
                "mlp": "NemotronHMLP",
                "moe": "NemotronHMoE",
            }[kind]
        )
        if kind == "mamba":
            assert mixer.ssm_state_size == block["ssm_state_size"]
        elif kind == "mlp":
            assert mixer.up_proj.out_features == block["intermediate_size"]
        elif kind == "attention":
            assert mixer.k_proj.out_features == GLOBALS["num_key_value_heads"] * GLOBALS["head_dim"]
        else:
            assert mixer.experts.num_experts == mixer.gate.num_experts == block["n_routed_experts"]
            assert mixer.gate.top_k == block["num_experts_per_tok"]
            assert mixer.experts.intermediate_dim == block["moe_intermediate_size"]
            assert mixer.shared_experts.intermediate_size == block["moe_shared_expert_intermediate_size"]
            latent = block.get("moe_latent_size")
            assert mixer.experts.up_proj.shape[-1] == (latent or HIDDEN)
            if latent is None:
                assert isinstance(mixer.fc1_latent_proj, torch.nn.Identity)
            else:
                assert (mixer.fc1_latent_proj.in_features, mixer.fc1_latent_proj.out_features) == (HIDDEN, latent)
            for name, attribute in [
                ("routed_scaling_factor", "routed_scaling_factor"),
                ("n_group", "num_group"),
                ("topk_group", "topk_group"),
                ("norm_topk_prob", "norm_topk_prob"),
            ]:
                assert getattr(mixer.gate, attribute) == block.get(name, getattr(defaults, name)), name


def test_logits_and_greedy_generation_match_the_reference(variant, checkpoint, loaded):
    model = loaded[0]
    state = to_model_names(checkpoint_state(checkpoint))
    per_block = block_values(variant)
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_logits(state, LAYER_TYPES, per_block, ids, GLOBALS)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    ids = input_ids(seq_len=4, batch_size=1)
    expected = reference_greedy(state, LAYER_TYPES, per_block, ids, MAX_NEW_TOKENS, GLOBALS)
    for use_cache in (True, False):
        generated = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=use_cache)
        assert torch.equal(generated, expected), use_cache


def test_save_pretrained_keeps_the_released_format_and_is_bit_exact(variant, checkpoint, loaded, tmp_path):
    model = loaded[0]
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    saved = json.loads((tmp_path / "config.json").read_text())
    released = puzzle_config(variant)
    for name in ("model_type", "block_configs", "mtp_block_configs", "blockwise_members", "hybrid_override_pattern"):
        assert saved[name] == released[name], name
    # Blockwise members stay out of the globals; nothing derived is written.
    assert not set(blockwise_members(variant)) & set(saved)
    assert "per_layer_config" not in saved and "layers_block_type" not in saved
    on_disk = checkpoint_state(checkpoint)
    assert checkpoint_state(tmp_path).keys() == {name for name in on_disk if not name.startswith("mtp.")}
    reloaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert_bit_identical(model, reloaded, input_ids())


def test_canonical_form_is_a_stock_nemotron_h_config(variant, loaded):
    canonical = loaded[0].config.to_canonical_dict()
    assert canonical["model_type"] == "nemotron_h" and canonical["architectures"] == ["NemotronHForCausalLM"]
    assert not {"block_configs", "mtp_block_configs", "blockwise_members"} & set(canonical)
    config = AutoConfig.for_model(**canonical)
    assert type(config) is NemotronHConfig and config.layers_block_type == LAYER_TYPES
    for idx, values in block_values(variant).items():
        for name, value in values.items():
            assert getattr(config.per_layer_config[idx], name) == value, (idx, name)


def test_the_pattern_is_derived_from_the_blocks():
    """`hybrid_override_pattern` and `layers_block_type` are not needed; when present they must agree."""
    config_dict = puzzle_config()
    del config_dict["hybrid_override_pattern"]
    assert AutoConfig.for_model(**config_dict).layers_block_type == LAYER_TYPES
    # Megatron-Bridge writes `layers_block_type` in the release's block names.
    names = [block["block_type"] for block in config_dict["block_configs"]]
    assert AutoConfig.for_model(**config_dict, layers_block_type=names).layers_block_type == LAYER_TYPES
    with pytest.raises(HeterogeneousConfigError, match=r"`hybrid_override_pattern` gives the blocks 'MEEEM-E' but"):
        AutoConfig.for_model(**{**config_dict, "hybrid_override_pattern": "MEEEM-E"})


def with_block(layer_idx, remove=(), mtp=False, **fields):
    config_dict = copy.deepcopy(puzzle_config("latent_mtp" if mtp else "plain"))
    block = config_dict["mtp_block_configs" if mtp else "block_configs"][layer_idx]
    block.update(fields)
    for name in remove:
        del block[name]
    config_dict["blockwise_members"] = sorted(
        {name for entry in config_dict["block_configs"] + config_dict["mtp_block_configs"] for name in entry}
    )
    return config_dict


@pytest.mark.parametrize(
    ("config_dict", "message"),
    [
        (with_block(2, sliding_window=128), r"block 2 \(attention\): `sliding_window`=128 is refused: upstream Nem"),
        (with_block(2, q_indexer_top_k=64), r"block 2 \(attention\): `q_indexer_top_k`=64 is refused: selective"),
        (with_block(0, moe_intermediate_size=8), r"block 0 \(mamba\): `moe_intermediate_size`=8 .* 'moe' blocks"),
        (with_block(1, ssm_state_size=8), r"block 1 \(moe\): `ssm_state_size`=8 .* field of 'mamba' blocks"),
        (with_block(1, no_op=True), r"block 1 \(moe\): `no_op`=True is refused: the field is unknown"),
        (with_block(1, remove=["n_routed_experts"]), r"block 1 \(moe\): the block has no `n_routed_experts`"),
        (with_block(5, remove=["intermediate_size"]), r"block 5 \(mlp\): the block has no `intermediate_size`"),
        (with_block(3, num_experts_per_tok=0), r"block 3 \(moe\): `num_experts_per_tok`=0 must be a positive integ"),
        (with_block(3, norm_topk_prob="yes"), r"block 3 \(moe\): `norm_topk_prob`='yes' must be true or false"),
        (with_block(1, block_type="ssm"), r"block 1: `block_type`='ssm'; a block is a mapping whose `block_type`"),
        (with_block(1, mtp=True, moe_latent_size=-1), r"MTP block 1 \(moe\): `moe_latent_size`=-1 must be a pos"),
        ({**puzzle_config(), "blockwise_members": ["block_type"]}, r"`blockwise_members`=\['block_type'\] does not"),
        ({**puzzle_config(), "block_configs": []}, r"`block_configs` must be a non-empty list of blocks"),
        ({**puzzle_config(), "per_layer_config": {0: {"skip": ["mixer"]}}}, r"does not take `per_layer_config`"),
    ],
)
def test_refused_fields_name_the_block_and_field(config_dict, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(**config_dict)


def test_refused_config_from_disk_names_the_block(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(with_block(4, ssm_state_size=0)))
    with pytest.raises(HeterogeneousConfigError, match=r"block 4 \(mamba\): `ssm_state_size`=0 must be a positive"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_tensors_under_the_model_prefix_load_too(tmp_path):
    """Megatron-Bridge's Puzzle bridge writes the tensors under `model.` (its `HF_PREFIX`) rather than `backbone.`;
    upstream's NemotronH mapping renames only `backbone.`, so both load into the same model."""
    tensors = {name.replace("backbone.", "model.", 1): tensor for name, tensor in puzzle_tensors("plain").items()}
    path = write_checkpoint(tmp_path / "model-prefix", puzzle_config("plain"), tensors, num_shards=2)
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager"}
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    released = AutoModelForCausalLM.from_pretrained(write_puzzle_checkpoint(tmp_path / "backbone-prefix"), **kwargs)
    assert_bit_identical(released.eval(), model.eval(), input_ids())
