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
"""Testing suite for the PyTorch Nemotron-H Puzzle model."""

import unittest

from transformers import is_torch_available
from transformers.testing_utils import require_torch, torch_device

from ...causal_lm_tester import CausalLMModelTest, CausalLMModelTester


if is_torch_available():
    import torch

    from transformers.cache_utils import DummyLayer, LinearAttentionLayer
    from transformers.models.nemotron_h_puzzle import NemotronHPuzzleModel


# The released format: one flat entry per block, keyed by `block_type`; each MoE block has its own expert count, top-k,
# expert width and shared-expert width (no global ones), a Mamba block may set its own SSM state size.
BLOCK_CONFIGS = [
    {"block_type": "mamba", "ssm_state_size": 8},
    {
        "block_type": "moe",
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "moe_shared_expert_intermediate_size": 32,
    },
    {"block_type": "attention"},
    {
        "block_type": "moe",
        "n_routed_experts": 4,
        "num_experts_per_tok": 1,
        "moe_intermediate_size": 24,
        "moe_shared_expert_intermediate_size": 16,
    },
]


class NemotronHPuzzleModelTester(CausalLMModelTester):
    if is_torch_available():
        base_model_class = NemotronHPuzzleModel

    def __init__(
        self,
        parent,
        block_configs=BLOCK_CONFIGS,
        ssm_state_size=16,
        mamba_num_heads=8,
        mamba_head_dim=8,
        n_groups=2,
        chunk_size=16,
        **kwargs,
    ):
        super().__init__(
            parent,
            num_hidden_layers=len(block_configs),
            block_configs=block_configs,
            ssm_state_size=ssm_state_size,
            mamba_num_heads=mamba_num_heads,
            mamba_head_dim=mamba_head_dim,
            n_groups=n_groups,
            chunk_size=chunk_size,
            **kwargs,
        )


@require_torch
class NemotronHPuzzleModelTest(CausalLMModelTest, unittest.TestCase):
    model_tester_class = NemotronHPuzzleModelTester

    @unittest.skip(
        reason="The training mixin logs `config.num_key_value_heads`, `config.intermediate_size`, ...: a heterogeneous "
        "config refuses to answer a per-layer attribute globally (`AmbiguousGlobalPerLayerAttributeError`, 5.15+)"
    )
    def test_training_overfit(self):
        pass

    @unittest.skip(reason="NemotronH needs at least 3 layers to test (mamba, moe, attention), and two MoE blocks here")
    def test_num_layers_is_small(self):
        pass

    def test_reverse_loading_mapping(self):
        # As NemotronH's test: the base model's weights have no `backbone.` prefix to reverse.
        super().test_reverse_loading_mapping(skip_base_model=True)

    def test_attention_outputs(self):
        """One attention map per attention block (block 2 here); Mamba and MoE blocks compute none."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        batch_size, seq_length = inputs_dict["input_ids"].shape
        for model_class in self.all_model_classes:
            model = model_class._from_config(config, attn_implementation="eager").to(torch_device).eval()
            with torch.no_grad():
                attentions = model(**inputs_dict, output_attentions=True).attentions
            shape = (batch_size, config.num_attention_heads, seq_length, seq_length)
            self.assertEqual([tuple(attention.shape) for attention in attentions], [shape])

    def _check_past_key_values_for_generate(self, batch_size, past_key_values, seq_length, config):
        """Per block: a Mamba block caches its conv and SSM states in its own state size, an attention block its keys
        and values, and a MoE block nothing."""
        self.assertEqual(len(past_key_values.layers), config.num_hidden_layers)
        for layer_idx, (layer, block_type) in enumerate(zip(past_key_values.layers, config.layers_block_type)):
            layer_config = config.per_layer_config[layer_idx]
            if block_type == "linear_attention":
                self.assertIsInstance(layer, LinearAttentionLayer)
                mamba_width = layer_config.mamba_num_heads * layer_config.mamba_head_dim
                conv_width = mamba_width + 2 * layer_config.n_groups * layer_config.ssm_state_size
                self.assertEqual(layer.conv_states[0].shape, (batch_size, conv_width, layer_config.conv_kernel))
                recurrent = (batch_size, layer_config.mamba_num_heads, layer_config.mamba_head_dim)
                self.assertEqual(layer.recurrent_states[0].shape, (*recurrent, layer_config.ssm_state_size))
            elif block_type == "full_attention":
                key_shape, value_shape = self._get_attention_shape(batch_size, seq_length, layer_config)
                self.assertEqual((layer.keys.shape, layer.values.shape), (key_shape, value_shape))
            else:
                self.assertIsInstance(layer, DummyLayer)

    def test_blocks_build_the_layers_they_describe(self):
        config = self.model_tester.get_config()
        self.assertEqual(config.layers_block_type, ["linear_attention", "moe", "full_attention", "moe"])
        model = NemotronHPuzzleModel(config)
        mamba, moe_a, _, moe_b = (layer.mixer for layer in model.layers)
        self.assertEqual(mamba.ssm_state_size, 8)
        self.assertEqual([moe.gate.weight.shape[0] for moe in (moe_a, moe_b)], [8, 4])
        self.assertEqual([moe.gate.top_k for moe in (moe_a, moe_b)], [2, 1])
        self.assertEqual(
            [moe.shared_experts.down_proj.in_features for moe in (moe_a, moe_b)],
            [32, 16],
        )
