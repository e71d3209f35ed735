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

Configs are registered once `configuration_auto` is imported, and their classes imported when first looked up. Model
classes import the modeling code, so they are registered when a config of one of these families is first made (always
before an Auto class looks its model up): processes that never meet such a checkpoint never import the config or
modeling code of these families because of us.
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
_registered_models: set[str] = set()


class LazyConfigRegistrations(dict):
    """`CONFIG_MAPPING._extra_content` (the configs registered beside upstream's) where the families' entries import
    their config class on first look-up.

    Registering the classes themselves would import them, and with them the upstream configs they subclass
    (`LlamaConfig`, ...), in every process that imports `configuration_auto` (seconds, for processes that only load a
    tokenizer), and from inside an import, where importing more can deadlock with another thread's imports. A family
    entry is its `CheckpointFormat` until it is read; reading it (`__getitem__`, `get`, `values`, `items`) imports the
    class and stores it. Membership (`"nemotron-nas" in CONFIG_MAPPING`, which `AutoConfig.from_pretrained` asks
    before choosing between local and remote code) needs no import.
    """

    def __getitem__(self, model_type: str) -> type:
        value = super().__getitem__(model_type)
        if isinstance(value, CheckpointFormat):
            value = value.config_class()
            super().__setitem__(model_type, value)
        return value

    def get(self, model_type: str, default=None):
        return self[model_type] if model_type in self else default  # noqa: SIM401 (`self.get` is this method)

    def values(self) -> list[type]:
        return [self[model_type] for model_type in self]

    def items(self) -> list[tuple[str, type]]:
        return [(model_type, self[model_type]) for model_type in self]


def register_configs(config_mapping) -> None:
    """Registers every family with `CONFIG_MAPPING` (lazily, see `LazyConfigRegistrations`; configs registered by
    users are kept and win), and its layers with the per-layer registry (the spec of the architecture whose stock code
    builds them). Idempotent; imports no config module.
    """
    from ..supported_models import SUPPORTED_ARCHITECTURES, register_architecture

    with _lock:
        for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
            register_architecture(model_type, SUPPORTED_ARCHITECTURES[checkpoint_format.architecture], overwrite=True)
        if not isinstance(config_mapping._extra_content, LazyConfigRegistrations):
            config_mapping._extra_content = LazyConfigRegistrations(
                {**CHECKPOINT_FORMATS, **config_mapping._extra_content}
            )


def register_models(model_type: str) -> None:
    """Registers the model classes of the family `model_type` with the Auto classes. Idempotent and cheap after the
    first call.

    One family at a time: registering a family imports its modeling code (GPT-OSS, NemotronH, ...), which a process
    that loads a checkpoint of another family never needs (it cost a fresh process about 20 ms of imports per load of
    a gpt-oss-puzzle or Nemotron-NAS checkpoint when every family was registered together).

    `exist_ok=True` is required, not a shortcut: upstream's `_LazyAutoMapping.register` silently ignores classes from
    `transformers.*` modules without it.
    """
    with _lock:
        if model_type in _registered_models:
            return
        from ...conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
        from ...models.auto import modeling_auto

        checkpoint_format = CHECKPOINT_FORMATS[model_type]
        config_class = checkpoint_format.config_class()
        if checkpoint_format.weight_conversion is not None:
            conversion = get_checkpoint_conversion_mapping(checkpoint_format.weight_conversion)
            register_checkpoint_conversion_mapping(model_type, conversion, overwrite=True)
        for auto_name, model_name in checkpoint_format.models.items():
            auto_class = getattr(modeling_auto, auto_name)
            auto_class.register(config_class, checkpoint_format.model_class(model_name), exist_ok=True)
        _registered_models.add(model_type)
