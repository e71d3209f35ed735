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
"""Where a model's decoder layers and sub-blocks are, and what a child's sub-block is relative to its parent's.

Everything here reads the architecture's registry entry (`supported_models.py`): the decoder-layer class, and for each
sub-block slot (`attention`, `mlp`, NemotronH's `mixer`) the layer members its skip replaces (its norm first, then the
sub-block). Nothing branches on `model_type`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...configuration_utils import PreTrainedConfig
from ..linear_utils import LinearSubBlock
from ..skip_utils import SkippedModule
from ..supported_models import HeterogeneousModelSpec, get_config_spec
from .configs import DeriveError


__all__ = ["SLOT_STATES", "Slot", "decoder_layers", "layer_slots", "model_spec", "slot_state"]

LINEAR_PREFIX = "_replaced_by_linear"
SLOT_STATES = ("stock", "linear", "skipped")


@dataclass(frozen=True)
class Slot:
    """A sub-block slot of a decoder layer: its name (the skip name) and the layer members it holds, norms first and
    the sub-block itself (`main`) last."""

    name: str
    members: tuple[str, ...]

    @property
    def main(self) -> str:
        return self.members[-1]

    @property
    def norms(self) -> tuple[str, ...]:
        return self.members[:-1]


def model_spec(model: nn.Module | PreTrainedConfig) -> HeterogeneousModelSpec:
    """The registry entry of the architecture of `model` (or of a config), or a `DeriveError` naming the supported
    ones."""
    from ..supported_models import SUPPORTED_ARCHITECTURES

    config = model if isinstance(model, PreTrainedConfig) else model.config
    spec = get_config_spec(config)
    if spec is None:
        what = f"model_type '{config.model_type}'"
        if model is not config:
            what = f"a {type(model).__name__} ({what})"
        raise DeriveError(
            f"Cannot derive from {what}: deriving needs an architecture of the registry "
            f"({sorted(SUPPORTED_ARCHITECTURES)})."
        )
    return spec


def decoder_layers(model: nn.Module, spec: HeterogeneousModelSpec) -> list[tuple[str, nn.Module]]:
    """`(qualified name, module)` of every decoder layer of `model`, in layer order."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, spec.layer_cls)]
    if len(layers) != model.config.num_hidden_layers:
        raise DeriveError(
            f"{type(model).__name__} holds {len(layers)} {spec.layer_cls.__name__} modules but its config has "
            f"{model.config.num_hidden_layers} layers: cannot tell which module is which layer."
        )
    return layers


def layer_slots(spec: HeterogeneousModelSpec) -> tuple[Slot, ...]:
    """The sub-block slots of the architecture, from its skip descriptors (a linear replacement lives in the slot of
    the sub-block it replaces and keeps its norm)."""
    return tuple(
        Slot(name, tuple(members)) for name, members in spec.skip_descriptors.items() if LINEAR_PREFIX not in name
    )


def slot_state(layer: nn.Module, slot: Slot) -> str:
    """What a layer's slot holds: `"stock"` (the architecture's own sub-block), `"linear"` or `"skipped"`."""
    module = layer.get_submodule(slot.main)
    if isinstance(module, LinearSubBlock):
        return "linear"
    if isinstance(module, SkippedModule):
        return "skipped"
    return "stock"
