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
"""DeciLM checkpoints as NVIDIA Model-Optimizer writes them (Nov 2025 and Jan 2026 block schemas) load natively.

The fixtures (`checkpoints.write_modelopt_checkpoint`) write every field of the writers' dataclasses, as
`dataclasses.asdict` does, over the same layer kinds and weights as the release fixture, so the model is compared with
the same independent reference. Every field the writers emit is then tested as honoured or refused, one by one.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule

from .checkpoints import (
    HEAD_DIM,
    HEADS,
    LINEAR,
    MODELOPT_SCHEMAS,
    NEMOTRON_LAYERS,
    NO_OP,
    RMS_EPS,
    VOCAB,
    load_logged,
    modelopt_config,
    nemotron_config,
    nemotron_specs,
    write_modelopt_checkpoint,
)
from .reference import reference_forward, reference_greedy


pytestmark = pytest.mark.usefixtures("single_thread")

# Nov 2025 has a per-FFN `hidden_act`; the last layer's is GELU, the others' SiLU.
ACTIVATIONS = {"nov2025": {7: "gelu"}, "jan2026": {}}


@pytest.fixture(scope="module", params=MODELOPT_SCHEMAS)
def schema(request):
    return request.param


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, schema):
    return write_modelopt_checkpoint(tmp_path_factory.mktemp(f"modelopt-{schema}"), schema, ACTIVATIONS[schema])


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_logged(checkpoint, dtype=torch.float32)


def checkpoint_state(checkpoint) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(shard))
    return {name: tensor.float() for name, tensor in state.items()}


def input_ids(seq_len=7, batch_size=2):
    return torch.randint(0, VOCAB, (batch_size, seq_len), generator=torch.Generator().manual_seed(1))


def test_loads_natively_with_every_tensor_consumed(checkpoint, loaded):
    model, info, _ = loaded
    assert type(model).__name__ == "DeciLMForCausalLM"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    state = checkpoint_state(checkpoint)
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == {
        name: tuple(t.shape) for name, t in state.items()
    }


def test_each_layer_is_built_as_its_block_says(schema, loaded):
    model = loaded[0]
    for idx, (decoder_layer, layer) in enumerate(zip(model.model.layers, NEMOTRON_LAYERS)):
        attention, mlp = decoder_layer.self_attn, decoder_layer.mlp
        if layer.kv_heads == NO_OP:
            assert isinstance(attention, SkippedModule), idx
        elif layer.kv_heads == LINEAR:
            assert tuple(attention.linear_attn.weight.shape) == (HEADS * HEAD_DIM, HEADS * HEAD_DIM), idx
        else:
            assert attention.k_proj.out_features == layer.kv_heads * HEAD_DIM, idx
        if layer.ffn_width == NO_OP:
            assert isinstance(mlp, SkippedModule), idx
        elif layer.ffn_width == LINEAR:
            assert hasattr(mlp, "linear_mlp"), idx
        else:
            assert mlp.gate_proj.out_features == layer.ffn_width, idx
            activation = ACTIVATIONS[schema].get(idx, "silu")
            assert type(mlp.act_fn).__name__ == {"silu": "SiLUActivation", "gelu": "GELUActivation"}[activation]


def test_logits_and_greedy_generation_match_the_reference(schema, checkpoint, loaded):
    model = loaded[0]
    state, specs = checkpoint_state(checkpoint), nemotron_specs(activations=ACTIVATIONS[schema])
    ids = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).logits, reference_forward(state, specs, ids, final_rms_eps=RMS_EPS), atol=1e-4, rtol=1e-4
        )
    ids = input_ids(seq_len=5)
    expected = reference_greedy(state, specs, ids, 4, final_rms_eps=RMS_EPS)
    for use_cache in (True, False):
        generated = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4, use_cache=use_cache
        )
        assert torch.equal(generated, expected), use_cache


def test_save_pretrained_keeps_the_format_and_is_bit_exact(schema, loaded, tmp_path):
    model = loaded[0]
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    written = modelopt_config(schema, activations=ACTIVATIONS[schema])
    assert saved["block_configs"] == written["block_configs"]
    for name in ("position_embedding_type", "o_proj_bias", "llama4_attn_implementation", "router_aux_loss_coef"):
        assert saved[name] == written[name], name
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


# Every field the writers emit, with a value other than the one in the fixture: `honoured` checks the config it builds,
# a string is the refusal's message. Layer 0 has a dense attention (4 KV heads) and a dense FFN (width 1024).
def kv_heads_of_layer_0(config):
    return config.per_layer_config[0].num_key_value_heads


def unchanged(config):
    return (kv_heads_of_layer_0(config), config.per_layer_config[0].intermediate_size) == (4, 1024)


FIELDS = [
    # attention, both schemas
    ("attention", "no_op", True, lambda config: "attention" in config.per_layer_config[0].skip),
    (
        "attention",
        "replace_with_linear",
        True,
        lambda config: "attention_replaced_by_linear" in config.per_layer_config[0].skip,
    ),
    ("attention", "sparsify", ["q_proj"], r"layer 0: `attention.sparsify`=\['q_proj'\] is refused: sparsified"),
    ("attention", "weights_precision", "fp8", r"layer 0: `attention.weights_precision`='fp8' is refused: only bf16"),
    (
        "attention",
        "mamba",
        {"state_dim": 16, "num_heads": 4, "head_dim": 64, "num_groups": 1},
        (r"layer 0: `attention.mamba`=.* is refused: Mamba mixers are not built"),
    ),
    ("attention", "llama4", {"attention_chunk_size": 8}, r"layer 0: `attention.llama4`=.* is refused: Llama-4 attent"),
    # attention, Nov 2025 (also the releases)
    ("attention", "n_heads_in_group", 2, lambda config: kv_heads_of_layer_0(config) == 2),
    ("attention", "window_length", 128, r"layer 0: `attention.window_length`=128 is refused: windowed attention"),
    ("attention", "num_sink_tokens", 4, r"layer 0: `attention.num_sink_tokens`=4 is refused: sink attention"),
    ("attention", "use_prefill_window_in_sink_attention", True, r"`attention.use_prefill_window_in_sink_att.* sink"),
    ("attention", "unshifted_sink", True, r"layer 0: `attention.unshifted_sink`=True is refused: sink attention"),
    # attention, Jan 2026
    ("attention", "num_key_value_heads", 2, lambda config: kv_heads_of_layer_0(config) == 2),
    # ffn, both schemas
    ("ffn", "no_op", True, lambda config: "mlp" in config.per_layer_config[0].skip),
    ("ffn", "replace_with_linear", True, lambda config: "mlp_replaced_by_linear" in config.per_layer_config[0].skip),
    ("ffn", "sparsify", ["up_proj"], r"layer 0: `ffn.sparsify`=\['up_proj'\] is refused: sparsified weights"),
    ("ffn", "weights_precision", "fp8", r"layer 0: `ffn.weights_precision`='fp8' is refused: only bf16"),
    ("ffn", "intermediate_size", 512, lambda config: config.per_layer_config[0].intermediate_size == 512),
    (
        "ffn",
        "moe",
        {"num_local_experts": 8, "num_experts_per_tok": 2},
        (r"layer 0: `ffn.moe`=.* is refused: mixture-of-experts FFNs are not built by stock Llama"),
    ),
    # ffn, Nov 2025
    ("ffn", "gated", False, r"layer 0: `ffn.gated`=False is refused: non-gated FFNs"),
    ("ffn", "hidden_act", "relu", lambda config: config.per_layer_config[0].hidden_act == "relu"),
    # block
    (
        "block",
        "parallel_blocks",
        [{"attention": {"no_op": True}, "ffn": {"no_op": True}}],
        (r"layer 0: `parallel_blocks`=.* is refused: parallel blocks are not built"),
    ),
    # top level
    ("top", "position_embedding_type", "none", r"`position_embedding_type`='none' is refused: only rope"),
    ("top", "position_embedding_type", "rope_llama4", r"`position_embedding_type`='rope_llama4' is refused"),
    ("top", "position_embedding_type", "mistral_yarn", r"`position_embedding_type`='mistral_yarn' is refused"),
    ("top", "o_proj_bias", True, r"`o_proj_bias`=True is refused: a bias on `o_proj` alone is not built"),
    ("top", "output_router_logits", True, r"`output_router_logits`=True is refused: the model has no routers"),
    ("top", "head_dim", 2 * HEAD_DIM, lambda config: config.per_layer_config[0].head_dim == 2 * HEAD_DIM),
    # changes nothing the model computes (see `configuration_nemotron_nas.py`)
    ("top", "llama4_attn_implementation", "eager", unchanged),
    ("top", "block_return_only_hidden_states", True, unchanged),
    ("top", "router_aux_loss_coef", 0.5, unchanged),
    ("top", "router_z_loss_coef", 0.1, unchanged),
]


def with_field(schema, where, name, value):
    config_dict = copy.deepcopy(modelopt_config(schema))
    if where == "top":
        config_dict[name] = value
    elif where == "block":
        config_dict["block_configs"][0][name] = value
    else:
        config_dict["block_configs"][0][where][name] = value
    return config_dict


def written_fields(schema):
    config_dict = modelopt_config(schema)
    blocks = config_dict["block_configs"]
    fields = {("top", name) for name in config_dict if name not in nemotron_config()}
    fields |= {("block", name) for block in blocks for name in block if name not in ("attention", "ffn")}
    return fields | {(where, name) for block in blocks for where in ("attention", "ffn") for name in block[where]}


@pytest.mark.parametrize("schema", MODELOPT_SCHEMAS)
def test_every_field_the_writers_emit_is_tested(schema):
    """A field the writers add later fails here until it is classified in `FIELDS`."""
    assert written_fields(schema) <= {(where, name) for where, name, _, _ in FIELDS}


def applicable_cases():
    for schema in MODELOPT_SCHEMAS:
        entry = modelopt_config(schema)["block_configs"][0]
        for where, name, value, expected in FIELDS:
            if where in ("top", "block") or name in entry[where]:
                yield pytest.param(schema, where, name, value, expected, id=f"{schema}-{where}.{name}={value!r}"[:70])


@pytest.mark.parametrize(("schema", "where", "name", "value", "expected"), applicable_cases())
def test_each_field_is_honoured_or_refused(schema, where, name, value, expected):
    config_dict = with_field(schema, where, name, value)
    if isinstance(expected, str):
        with pytest.raises(HeterogeneousConfigError, match=expected):
            AutoConfig.for_model(**config_dict)
    else:
        assert expected(AutoConfig.for_model(**config_dict))


@pytest.mark.parametrize("schema", MODELOPT_SCHEMAS)
def test_a_refused_top_level_field_stops_loading(schema, tmp_path):
    """From disk too: a `position_embedding_type: none` model is never built with rope."""
    (tmp_path / "config.json").write_text(json.dumps(with_field(schema, "top", "position_embedding_type", "none")))
    with pytest.raises(HeterogeneousConfigError, match=r"`position_embedding_type`='none' is refused"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
