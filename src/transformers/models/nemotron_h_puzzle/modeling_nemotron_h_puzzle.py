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
"""Nemotron-H Puzzle models: stock NemotronH classes bound to `NemotronHPuzzleConfig`.

The checkpoints hold NemotronH's tensor names (`backbone.layers.{i}.mixer...`, one tensor per expert, LatentMoE's
`mixer.fc1_latent_proj` / `fc2_latent_proj`), mapped by upstream's NemotronH conversion mapping (registered for this
model type too), and the config expresses every block in `per_layer_config`, so the stock NemotronH code builds them
block by block. The multi-token-prediction tensors (`mtp.*`) are read and reported as unused: upstream NemotronH 5.23
has no MTP layers to load them into (its `_keys_to_ignore_on_load_unexpected` drops them).
"""

from ...generation import GenerationMixin
from ...heterogeneity.checkpoint_formats.loading_utils import UnusedTensors, UnusedTensorsMixin
from ...heterogeneity.checkpoint_formats.stock_classes import StockExpertsMixin
from ..nemotron_h.modeling_nemotron_h import NemotronHForCausalLM, NemotronHModel
from .configuration_nemotron_h_puzzle import NemotronHPuzzleConfig


__all__ = ["NemotronHPuzzleForCausalLM", "NemotronHPuzzleModel"]

MTP_TENSORS = UnusedTensors(
    r"^mtp\.",
    "multi-token-prediction tensors (`mtp.*`, described by `mtp_block_configs`)",
    "upstream NemotronH (Transformers 5.23) builds no MTP layers, so the model predicts one token per step",
    warn=True,
)


class NemotronHPuzzleModel(UnusedTensorsMixin, StockExpertsMixin, NemotronHModel):
    config_class = NemotronHPuzzleConfig
    _unused_tensors = (MTP_TENSORS,)


class NemotronHPuzzleForCausalLM(UnusedTensorsMixin, StockExpertsMixin, NemotronHForCausalLM, GenerationMixin):
    config_class = NemotronHPuzzleConfig
    _unused_tensors = (MTP_TENSORS,)
