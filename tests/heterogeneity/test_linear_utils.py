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
"""Linear sub-blocks: the replacement modules, and the `per_layer_config` spelling of them.

Their numerics inside every Llama-family architecture are checked against the reference by the "linear" case of
`test_modeling_architectures.py`.
"""

import copy
import json
import pickle

import pytest
import torch
from torch import nn

from transformers import LlamaConfig, LlamaForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError, ReturnEntry, SkippedModule
from transformers.heterogeneity.linear_utils import LinearSubBlock, get_linear_replacement

from .conftest import TINY


class Attention(nn.Module):
    def forward(self, hidden_states, attention_mask=None):
        raise AssertionError("replaced modules never run")


ENTRIES = (ReturnEntry("hidden_states"), ReturnEntry(None))


def test_returns_the_linear_map_of_its_input_and_no_weights():
    linear = get_linear_replacement(Attention, "linear_attn", *ENTRIES)(8)
    hidden_states = torch.randn(2, 3, 8)
    output, weights = linear(hidden_states, attention_mask=None)
    torch.testing.assert_close(output, hidden_states @ linear.linear_attn.weight.T)
    assert weights is None


def test_holds_one_bias_free_square_matrix_under_its_checkpoint_name():
    linear_cls = get_linear_replacement(Attention, "linear_attn", *ENTRIES)
    assert issubclass(linear_cls, LinearSubBlock) and issubclass(linear_cls, SkippedModule)
    assert linear_cls.__name__ == "LinearAttention" and linear_cls.replaces is Attention
    assert {k: tuple(v.shape) for k, v in linear_cls(8).state_dict().items()} == {"linear_attn.weight": (8, 8)}


def test_equal_requests_share_one_class():
    assert get_linear_replacement(Attention, "linear_attn", *ENTRIES) is get_linear_replacement(
        Attention, "linear_attn", *ENTRIES
    )


def test_transform_is_refused():
    with pytest.raises(ValueError, match=r"ReturnEntry\('hidden_states'\) has a transform.*drop the transform"):
        get_linear_replacement(Attention, "linear_attn", ReturnEntry("hidden_states", torch.zeros_like))


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match=r"ReturnEntry\('hidden'\) names no argument of Attention.forward"):
        get_linear_replacement(Attention, "linear_attn", ReturnEntry("hidden"))


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda module: pickle.loads(pickle.dumps(module))])
def test_copies_keep_class_and_weights(clone):
    linear = get_linear_replacement(Attention, "linear_attn", *ENTRIES)(8)
    copied = clone(linear)
    assert type(copied) is type(linear)
    assert torch.equal(copied.linear_attn.weight, linear.linear_attn.weight)


def test_per_layer_config_json_round_trips(tmp_path):
    per_layer = {0: {"skip": ["attention_replaced_by_linear"]}, 2: {"skip": ["mlp_replaced_by_linear", "attention"]}}
    model = LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=per_layer))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["per_layer_config"]
    assert saved == {
        "0": {"skip": ["attention_replaced_by_linear"]},
        "2": {"skip": ["attention", "mlp_replaced_by_linear"]},
    }
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert type(reloaded.model.layers[0].self_attn).__name__ == "LinearLlamaAttention"
    assert type(reloaded.model.layers[2].mlp).__name__ == "LinearLlamaMLP"
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("first", "second"), [("attention", "attention_replaced_by_linear"), ("mlp_replaced_by_linear", "mlp")]
)
def test_skipping_and_linearizing_one_sub_block_is_refused(first, second):
    config = LlamaConfig(**TINY, per_layer_config={1: {"skip": [first, second]}})
    with pytest.raises(
        HeterogeneousConfigError, match=r"Layer 1: skips '\w+' and '\w+' both replace `(self_attn|mlp)`"
    ):
        LlamaForCausalLM(config)


def test_deprecated_skip_names_load_with_a_warning_and_save_renamed(tmp_path):
    """`linear_attention` is upstream's cache layer type of Mamba-style layers; the skips were renamed. Configs written
    with the old names still load (with a FutureWarning) and are saved with the new ones."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.warns(FutureWarning, match=r"Layer 1: skip names \['linear_attention', 'linear_mlp'\] are deprecated"):
        config = LlamaConfig(**TINY, per_layer_config={1: {"skip": ["linear_attention", "linear_mlp"]}})
    assert config.per_layer_config[1].skip == ["attention_replaced_by_linear", "mlp_replaced_by_linear"]
    model = LlamaForCausalLM(config)
    assert hasattr(model.model.layers[1].self_attn, "linear_attn") and hasattr(model.model.layers[1].mlp, "linear_mlp")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["per_layer_config"]
    assert saved == {"1": {"skip": ["attention_replaced_by_linear", "mlp_replaced_by_linear"]}}
