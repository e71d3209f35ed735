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
"""Testing suite for the PyTorch gpt-oss-puzzle model."""

import unittest

from transformers import is_torch_available
from transformers.testing_utils import require_torch, torch_device

from ...causal_lm_tester import CausalLMModelTest, CausalLMModelTester
from ...test_modeling_common import ids_tensor


if is_torch_available():
    import torch

    from transformers.models.gpt_oss_puzzle import GptOssPuzzleModel


# gpt-oss-puzzle-88B's two per-layer fields: experts removed from some layers (128 or 64 there), and full attention or a
# sliding window per layer (None, 128 or 8192 there). The common tests read `config.sliding_window` as one value, so the
# tester's sliding layer keeps the global window; `test_each_layer_attends_within_its_own_window` gives layers their
# own windows.
BLOCK_CONFIGS = [{"num_local_experts": 8}, {"num_local_experts": 4, "sliding_window": 128}]
OWN_WINDOWS = [
    {"num_local_experts": 8},
    {"num_local_experts": 4, "sliding_window": 3},
    {"num_local_experts": 8, "sliding_window": 5},
]


class GptOssPuzzleModelTester(CausalLMModelTester):
    if is_torch_available():
        base_model_class = GptOssPuzzleModel

    def __init__(self, parent, block_configs=BLOCK_CONFIGS, sliding_window=128, **kwargs):
        super().__init__(
            parent,
            num_hidden_layers=len(block_configs),
            block_configs=block_configs,
            sliding_window=sliding_window,
            **kwargs,
        )


@require_torch
class GptOssPuzzleModelTest(CausalLMModelTest, unittest.TestCase):
    _is_stateful = True
    model_split_percents = [0.5, 0.6]
    model_tester_class = GptOssPuzzleModelTester

    @unittest.skip(
        reason="The training mixin logs `config.num_key_value_heads`, `config.intermediate_size`, ...: a heterogeneous "
        "config refuses to answer a per-layer attribute globally (`AmbiguousGlobalPerLayerAttributeError`, 5.15+)"
    )
    def test_training_overfit(self):
        pass

    @unittest.skip(reason="As for GPT-OSS: the MoE router does not ignore padding tokens")
    def test_eager_padding_matches_padding_free_with_position_ids(self):
        pass

    @unittest.skip(
        reason="GPT-OSS's tensor-parallel plan leaves the experts to its expert-parallel plan: stock GptOssModel fails "
        "this test the same way in transformers 5.23"
    )
    def test_moe_parallel_plans_shard_experts(self):
        pass

    @unittest.skip(
        reason="GptOssForCausalLM's load-balancing loss takes one expert count for all layers: with per-layer expert "
        "counts `output_router_logits` is refused (HeterogeneousConfigError) rather than computed wrongly"
    )
    def test_output_router_logits_from_config(self):
        pass

    @unittest.skip(reason="Asks for every output, router logits included: see test_output_router_logits_from_config")
    def test_capture_outputs_decorator(self):
        pass

    def test_blocks_build_the_layers_they_describe(self):
        config = self.model_tester.get_config()
        self.assertEqual(config.layer_types, ["full_attention", "sliding_attention"])
        model = GptOssPuzzleModel(config)
        self.assertEqual([layer.mlp.experts.num_experts for layer in model.layers], [8, 4])
        self.assertEqual([layer.mlp.router.weight.shape[0] for layer in model.layers], [8, 4])

    def test_each_layer_attends_within_its_own_window(self):
        """Layer 0 attends to every earlier token, layers 1 and 2 to their last 3 and 5 (the token itself included)."""
        config = self.model_tester_class(self, block_configs=OWN_WINDOWS, sliding_window=None).get_config()
        self.assertEqual([config.per_layer_config[i].sliding_window for i in (1, 2)], [3, 5])
        model = GptOssPuzzleModel._from_config(config, attn_implementation="eager").to(torch_device).eval()
        seq_length = 8
        with torch.no_grad():
            attentions = model(ids_tensor([1, seq_length], config.vocab_size), output_attentions=True).attentions
        distance = torch.arange(seq_length)[:, None] - torch.arange(seq_length)[None, :]
        for attention, window in zip(attentions, (seq_length, 3, 5)):
            visible = ((distance >= 0) & (distance < window)).to(torch_device)
            self.assertTrue(torch.all(attention[..., ~visible] == 0))
            self.assertTrue(torch.all(attention[..., visible] > 0))
