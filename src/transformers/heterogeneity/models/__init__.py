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
"""Heterogeneous checkpoint families that load natively through the Auto classes.

Each family has a config class that translates its own per-layer fields into `per_layer_config` and model classes
that are the stock classes of the architecture it derives from (Llama, NemotronH, GPT-OSS) bound to it (one subpackage per family, laid out as upstream's `models/<name>/`).
Registration uses the public `AutoConfig.register` / `Auto*.register` API. Once a family's `model_type` is
registered, upstream resolves its config and model locally, so the `auto_map` to remote code in those checkpoints is
never followed and no `trust_remote_code` is asked for.

Configs are registered once `configuration_auto` is imported. Model classes import the modeling code, so they
are registered when a config of one of these families is first made (always before an Auto class looks its model up):
processes that never meet such a checkpoint never import the modeling code because of us.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field


__all__ = ["CHECKPOINT_FORMATS", "CheckpointFormat", "register_configs", "register_models"]


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint family: where its classes live (module paths relative to this package)."""

    package: str
    config: str
    models: dict[str, str] = field(default_factory=dict)  # Auto class name -> model class name
    architecture: str = "llama"  # the `SUPPORTED_ARCHITECTURES` row whose stock layers build the family's models
    weight_conversion: str | None = None  # model type whose checkpoint conversion mapping (tensor renames) applies

    def config_class(self) -> type:
        return getattr(importlib.import_module(f"{__name__}.{self.package}.configuration_{self.package}"), self.config)

    def model_class(self, name: str) -> type:
        return getattr(importlib.import_module(f"{__name__}.{self.package}.modeling_{self.package}"), name)


_DECILM_MODELS = {"AutoModel": "DeciLMModel", "AutoModelForCausalLM": "DeciLMForCausalLM"}

CHECKPOINT_FORMATS: dict[str, CheckpointFormat] = {
    "nemotron-nas": CheckpointFormat("nemotron_nas", "NemotronNasConfig", _DECILM_MODELS),
    "deci": CheckpointFormat("deci", "DeciConfig", _DECILM_MODELS),
    "nemotron_h_puzzle": CheckpointFormat(
        "nemotron_h_puzzle",
        "NemotronHPuzzleConfig",
        {"AutoModel": "NemotronHPuzzleModel", "AutoModelForCausalLM": "NemotronHPuzzleForCausalLM"},
        architecture="nemotron_h",
        weight_conversion="nemotron_h",  # `backbone.` prefix and per-expert tensors, as NemotronH checkpoints
    ),
    "gpt_oss_puzzle": CheckpointFormat(
        "gpt_oss_puzzle",
        "GptOssPuzzleConfig",
        {"AutoModel": "GptOssPuzzleModel", "AutoModelForCausalLM": "GptOssPuzzleForCausalLM"},
        architecture="gpt_oss",
    ),
}


_lock = threading.RLock()
_registered_models = False


def register_configs() -> None:
    """Registers every family's config with `AutoConfig`, and its layers with the per-layer registry (the spec of the
    architecture whose stock code builds them). Idempotent.

    Imports the family config modules, hence the upstream configs they subclass: call it only once no upstream
    module is half-imported (`activation.py` waits for that).
    """
    from ...models.auto.configuration_auto import AutoConfig
    from ..supported_models import SUPPORTED_ARCHITECTURES, register_architecture

    with _lock:
        for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
            AutoConfig.register(model_type, checkpoint_format.config_class(), exist_ok=True)
            register_architecture(model_type, SUPPORTED_ARCHITECTURES[checkpoint_format.architecture], overwrite=True)


def register_models() -> None:
    """Registers every family's model classes with the Auto classes. Idempotent and cheap after the first call.

    `exist_ok=True` is required, not a shortcut: upstream's `_LazyAutoMapping.register` silently ignores classes from
    `transformers.*` modules without it.
    """
    global _registered_models
    with _lock:
        if _registered_models:
            return
        from ...conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
        from ...models.auto import modeling_auto

        for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
            config_class = checkpoint_format.config_class()
            if checkpoint_format.weight_conversion is not None:
                conversion = get_checkpoint_conversion_mapping(checkpoint_format.weight_conversion)
                register_checkpoint_conversion_mapping(model_type, conversion, overwrite=True)
            for auto_name, model_name in checkpoint_format.models.items():
                auto_class = getattr(modeling_auto, auto_name)
                auto_class.register(config_class, checkpoint_format.model_class(model_name), exist_ok=True)
        _registered_models = True
