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
"""Loading a homogeneous parent with a `per_layer_config` that changes shapes (`from_pretrained`'s part of `derive`,
`derive/loading.py`): a clear error naming layer, tensor and both shapes that points to `derive`; skipped tensors
reported as dropped by their skip; homogeneous loads exactly upstream's."""

import json

import pytest
import torch

from transformers import AutoModelForCausalLM
from transformers.heterogeneity import HeterogeneousConfigError

from .derive_models import save_parent
from .test_loading import load_report


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    return save_parent(tmp_path_factory.mktemp("parent"))


def test_another_per_layer_shape_is_a_clear_error_that_points_to_derive(parent_dir):
    with load_report() as stream, pytest.raises(HeterogeneousConfigError) as raised:
        AutoModelForCausalLM.from_pretrained(
            parent_dir, per_layer_config={1: {"intermediate_size": 64}, 2: {"num_key_value_heads": 2}}
        )
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)  # as upstream's size-mismatch error, for code that catches that
    assert (
        "layer 1: model.layers.1.mlp.up_proj.weight is (96, 64) in the checkpoint and (64, 64) in the model" in message
    )
    assert "(per_layer_config: {'intermediate_size': 64})" in message
    assert "layer 2: model.layers.2.self_attn.k_proj.weight is (32, 64) in the checkpoint and (16, 64)" in message
    assert "transformers.heterogeneity.derive(checkpoint, per_layer_config, ...)" in message
    assert "transformers-heterogeneity derive" in message
    assert "LOAD REPORT" not in stream.getvalue()


def test_ignore_mismatched_sizes_keeps_upstreams_random_init_and_points_to_derive(parent_dir):
    with load_report() as stream:
        model = AutoModelForCausalLM.from_pretrained(
            parent_dir, per_layer_config={1: {"intermediate_size": 64}}, ignore_mismatched_sizes=True
        )
    report = stream.getvalue()
    assert "initialised randomly (ignore_mismatched_sizes=True)" in report and "derive" in report
    assert "MISMATCH" in report  # upstream's load report still lists them
    assert model.model.layers[1].mlp.up_proj.weight.shape == (64, 64)


def test_skipped_sub_blocks_are_dropped_by_their_skip_not_unexpected(parent_dir):
    with load_report() as stream:
        model = AutoModelForCausalLM.from_pretrained(
            parent_dir, per_layer_config={0: {"skip": ["attention"]}, 3: {"skip": ["mlp"]}}
        )
    report = stream.getvalue()
    assert "UNEXPECTED" not in report
    assert "layer 0 skips 'attention', so the checkpoint's 5 tensors of that sub-block are dropped" in report
    assert "layer 3 skips 'mlp', so the checkpoint's 4 tensors of that sub-block are dropped" in report
    assert "model.layers.3.post_attention_layernorm.weight" in report
    reference = AutoModelForCausalLM.from_pretrained(parent_dir)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, reference.model.layers[1].mlp.up_proj.weight)


def test_a_linear_replacement_points_to_derive_for_its_weights(parent_dir):
    with load_report() as stream:
        AutoModelForCausalLM.from_pretrained(parent_dir, per_layer_config={2: {"skip": ["mlp_replaced_by_linear"]}})
    report = stream.getvalue()
    assert "layer 2 skips 'mlp_replaced_by_linear'" in report
    assert "no weights for the linear sub-blocks ['model.layers.2.mlp.linear_mlp.weight']" in report
    assert "least squares" in report


def test_homogeneous_loads_keep_upstreams_behaviour(parent_dir, tmp_path):
    """A homogeneous config with another width is upstream's business: its own error and report, untouched."""
    config = json.loads((parent_dir / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for file in parent_dir.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    with load_report() as stream, pytest.raises(RuntimeError) as raised:
        AutoModelForCausalLM.from_pretrained(other)
    assert not isinstance(raised.value, HeterogeneousConfigError)
    assert "You set `ignore_mismatched_sizes` to `False`" in str(raised.value)
    assert "MISMATCH" in stream.getvalue()
