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
"""Nemotron-NAS checkpoints load natively through the Auto classes and compute what their format says.

The fixture is written in the real format by `checkpoints.py` (not by the package) and the model is compared with the
independent reference forward; every refusal is checked with its message.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, kv_cache_bytes
from transformers.heterogeneity.checkpoint_formats.decilm_blocks import ffn_mult_to_intermediate_size

from .checkpoints import (
    HEAD_DIM,
    LINEAR,
    NEMOTRON_LAYERS,
    NO_OP,
    RMS_EPS,
    VOCAB,
    attention,
    ffn,
    load_logged,
    nemotron_config,
    nemotron_specs,
    write_nemotron_checkpoint,
)
from .reference import reference_forward, reference_greedy


pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_nemotron_checkpoint(tmp_path_factory.mktemp("nemotron-nas"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """(model in float32, loading info); no `trust_remote_code` anywhere."""
    model, info = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def checkpoint_state(checkpoint) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(shard))
    return {name: tensor.float() for name, tensor in state.items()}


def input_ids(seq_len=7, batch_size=2, seed=1):
    return torch.randint(0, VOCAB, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("hidden_size", "ffn_mult", "width"),
    [
        (8192, 2.625, 14336),
        (8192, 5.25, 28672),
        (8192, 0.4375, 2560),
        (512, 1.0, 512),
        (512, 2.0, 768),
        (512, 2.625, 1024),
    ],
)
def test_ffn_mult_rounding_matches_the_released_checkpoints(hidden_size, ffn_mult, width):
    assert ffn_mult_to_intermediate_size(ffn_mult, hidden_size) == width


def test_loads_natively_with_every_tensor_consumed(checkpoint, loaded):
    model, info = loaded
    assert type(model).__name__ == "DeciLMForCausalLM"
    assert type(model.config).__name__ == "NemotronNasConfig"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in checkpoint_state(checkpoint).items()
    }


def test_default_dtype_is_the_checkpoint_dtype(checkpoint):
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model.dtype == torch.bfloat16


def test_block_configs_become_per_layer_config(loaded):
    config = loaded[0].config
    for idx, layer in enumerate(NEMOTRON_LAYERS):
        layer_config = config.per_layer_config[idx]
        expected_skips = []
        if layer.kv_heads > 0:
            assert layer_config.num_key_value_heads == layer.kv_heads
        else:
            expected_skips.append("attention" if layer.kv_heads == NO_OP else "attention_replaced_by_linear")
        if layer.ffn_width > 0:
            assert layer_config.intermediate_size == layer.ffn_width
        else:
            expected_skips.append("mlp" if layer.ffn_width == NO_OP else "mlp_replaced_by_linear")
        assert sorted(layer_config.skip) == sorted(expected_skips), idx


def test_logits_match_the_reference(checkpoint, loaded):
    model = loaded[0]
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_forward(checkpoint_state(checkpoint), nemotron_specs(), ids, final_rms_eps=RMS_EPS)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_the_reference(checkpoint, loaded):
    model = loaded[0]
    ids = input_ids(seq_len=5)
    generated = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW_TOKENS
    )
    expected = reference_greedy(
        checkpoint_state(checkpoint), nemotron_specs(), ids, MAX_NEW_TOKENS, final_rms_eps=RMS_EPS
    )
    assert torch.equal(generated, expected)
    uncached = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=False
    )
    assert torch.equal(uncached, expected)


def test_kv_cache_only_for_real_attention(loaded):
    model = loaded[0]
    ids = input_ids(seq_len=5, batch_size=1)
    outputs = model.generate(ids, do_sample=False, max_new_tokens=3, return_dict_in_generate=True)
    cached_tokens = 5 + 3 - 1
    held = []
    for layer in outputs.past_key_values.layers:
        tensors = [getattr(layer, name, None) for name in ("keys", "values")]
        held.append(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))
    expected = [2 * max(layer.kv_heads, 0) * HEAD_DIM * cached_tokens * 4 for layer in NEMOTRON_LAYERS]
    assert held == expected
    predicted = kv_cache_bytes(model.config, torch.float32)
    assert [size.layer_idx for size in predicted] == [
        i for i, layer in enumerate(NEMOTRON_LAYERS) if layer.kv_heads > 0
    ]
    assert [size.bytes_per_token * cached_tokens for size in predicted] == [b for b in expected if b]


def test_save_pretrained_keeps_the_source_format_and_is_bit_exact(loaded, tmp_path):
    model = loaded[0]
    model.save_pretrained(tmp_path, max_shard_size="5MB")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "nemotron-nas" and saved["architectures"] == ["DeciLMForCausalLM"]
    assert saved["block_configs"] == nemotron_config()["block_configs"]
    assert saved["auto_map"] == nemotron_config()["auto_map"]
    assert saved["intermediate_size"] is None and saved["num_key_value_heads"] is None
    assert "per_layer_config" not in saved
    assert (tmp_path / "model.safetensors.index.json").is_file()

    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_newer_block_format_builds_the_same_layers(loaded):
    """`attention.num_key_value_heads` / `ffn.intermediate_size` instead of `n_heads_in_group` / `ffn_mult`."""
    config_dict = nemotron_config()
    for block, layer in zip(config_dict["block_configs"], NEMOTRON_LAYERS):
        if layer.kv_heads > 0:
            block["attention"] = {"num_key_value_heads": layer.kv_heads, "no_op": False, "replace_with_linear": False}
        if layer.ffn_width > 0:
            block["ffn"] = {"intermediate_size": layer.ffn_width, "no_op": False, "replace_with_linear": False}
    config = AutoConfig.for_model(**config_dict)
    reference_config = loaded[0].config
    for idx in range(len(NEMOTRON_LAYERS)):
        for name in ("num_key_value_heads", "intermediate_size", "skip"):
            assert getattr(config.per_layer_config[idx], name) == getattr(reference_config.per_layer_config[idx], name)


def with_block(layer_idx, attention_fields=None, ffn_fields=None, **config_changes):
    config_dict = copy.deepcopy(nemotron_config())
    block = config_dict["block_configs"][layer_idx]
    block["attention"].update(attention_fields or {})
    block["ffn"].update(ffn_fields or {})
    config_dict.update(config_changes)
    return config_dict


@pytest.mark.parametrize(
    ("config_dict", "message"),
    [
        (
            with_block(0, {"sparsify": ["q_proj"]}),
            r"layer 0: `attention.sparsify`=\['q_proj'\] is refused: sparsified",
        ),
        (with_block(1, ffn_fields={"sparsify": "x"}), r"layer 1: `ffn.sparsify`='x' is refused: sparsified weights"),
        (
            with_block(7, {"window_length": 128}),
            r"layer 7: `attention.window_length`=128 is refused: windowed attention",
        ),
        (with_block(0, {"num_sink_tokens": 4}), r"layer 0: `attention.num_sink_tokens`=4 is refused: sink attention"),
        (
            with_block(0, {"unshifted_sink": True}),
            r"layer 0: `attention.unshifted_sink`=True is refused: sink attention",
        ),
        (
            with_block(4, ffn_fields={"moe": {"num_experts": 8}}),
            r"layer 4: `ffn.moe`=.* mixture-of-experts FFNs are not built",
        ),
        (
            with_block(3, {"mamba": {"state_dim": 8}}),
            r"layer 3: `attention.mamba`=.* Mamba mixers are not built by stock",
        ),
        (with_block(2, {"rotary_mode": "xpos"}), r"layer 2: `attention.rotary_mode`='xpos' .* unknown to"),
        (
            with_block(2, {"no_op": True, "replace_with_linear": True}),
            r"layer 2: `attention.no_op` and `attention.repl",
        ),
        (with_block(0, {"n_heads_in_group": 3}), r"layer 0: `attention.n_heads_in_group`=3 must be a positive integ"),
        (with_block(0, {"num_key_value_heads": 2}), r"layer 0: `attention.n_heads_in_group`=1 gives 4 KV heads but"),
        (with_block(0, ffn_fields={"ffn_mult": None}), r"layer 0: a dense FFN needs `ffn.ffn_mult` or `ffn.interm"),
        (with_block(0, {"n_heads_in_group": None}), r"layer 0: a dense attention needs `attention.n_heads_in_group`"),
        (with_block(0, num_hidden_layers=4), r"`block_configs` has 8 entries but `num_hidden_layers` is 4"),
        (with_block(0, per_layer_config={1: {"skip": ["mlp"]}}), r"describes its layers with \['block_configs'\]"),
    ],
)
def test_unsupported_fields_are_refused_naming_layer_and_field(config_dict, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        AutoConfig.for_model(**config_dict)


def test_unknown_fields_at_their_default_are_accepted():
    config = AutoConfig.for_model(**with_block(2, {"rotary_mode": None}, {"future_flag": False}))
    assert config.per_layer_config[2].skip == ["attention"]


def test_refused_config_from_disk_names_the_layer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(with_block(5, ffn_fields={"sparsify": True})))
    with pytest.raises(HeterogeneousConfigError, match=r"layer 5: `ffn.sparsify`=True is refused"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_blocks_keep_their_attention_and_ffn_fields_in_the_fixture():
    """The fixture writes every field the released format has, so the default-value checks are exercised."""
    assert set(attention()) >= {"n_heads_in_group", "window_length", "num_sink_tokens", "sparsify"}
    assert set(ffn()) == {"ffn_mult", "no_op", "replace_with_linear", "sparsify"}
    assert LINEAR < NO_OP


def test_fp8_kv_scales_are_read_and_reported_not_unexpected(loaded, tmp_path):
    """An FP8 release's KV-cache scales (one pair per attention layer) are consumed and logged, as in every family."""
    path = write_nemotron_checkpoint(tmp_path / "fp8", with_kv_scales=True)
    model, info, log = load_logged(path, dtype=torch.float32)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    attention_layers = [idx for idx, layer in enumerate(NEMOTRON_LAYERS) if layer.kv_heads > 0]
    assert attention_layers == [0, 1, 4, 7]
    assert "DeciLMForCausalLM: the checkpoint's 8 fp8 KV-cache scales" in log and "model's dtype" in log
    assert not any(name.endswith(("k_scale", "v_scale")) for name in model.state_dict())
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded[0](ids).logits)
