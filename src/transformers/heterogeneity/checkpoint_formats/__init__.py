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
"""The heterogeneous checkpoint families that load natively through the Auto classes, and what they share.

Each family is a model package in upstream's layout, `transformers/models/<package>/` (`nemotron_nas`, `deci`,
`gpt_oss_puzzle`, `nemotron_h_puzzle`): a config class that translates the family's own per-layer fields into
`per_layer_config` (`format_utils.CheckpointFormatConfigMixin`), and model classes that are the stock classes of the
architecture it derives from (Llama, GPT-OSS, NemotronH) bound to that config. `CHECKPOINT_FORMATS` is the one table
of families; this package holds what they share (the DeciLM block and AnyModel translations, the loading helpers).

The Auto classes find a family in one of two ways, and the code here works in both:

- Inside Transformers (the upstream patch series), `CONFIG_MAPPING_NAMES`, `MODEL_MAPPING_NAMES` and
  `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` hold the families like any model: nothing is registered here.
- In the overlay, `register_configs` (at activation) and `register_models` add what upstream's mappings do not hold,
  through the same tables `AutoConfig.register` / `Auto*.register` fill. Once a family's `model_type` is known,
  upstream resolves its config and model locally, so the `auto_map` to remote code in those checkpoints is never
  followed and no `trust_remote_code` is asked for.

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
    """One checkpoint family: its model package `transformers.models.<package>` and the names of its classes."""

    package: str
    config: str
    models: dict[str, str] = field(default_factory=dict)  # Auto class name -> model class name
    architecture: str = "llama"  # the `SUPPORTED_ARCHITECTURES` row whose stock layers build the family's models
    weight_conversion: str | None = None  # model type whose checkpoint conversion mapping (tensor renames) applies

    def config_class(self) -> type:
        module = importlib.import_module(f"transformers.models.{self.package}.configuration_{self.package}")
        return getattr(module, self.config)

    def model_class(self, name: str) -> type:
        return getattr(importlib.import_module(f"transformers.models.{self.package}.modeling_{self.package}"), name)


CHECKPOINT_FORMATS: dict[str, CheckpointFormat] = {
    "nemotron-nas": CheckpointFormat(
        "nemotron_nas",
        "NemotronNasConfig",
        {"AutoModel": "DeciLMModel", "AutoModelForCausalLM": "DeciLMForCausalLM"},
    ),
    "deci": CheckpointFormat(
        "deci", "DeciConfig", {"AutoModel": "DeciModel", "AutoModelForCausalLM": "DeciForCausalLM"}
    ),
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
    """Registers with `CONFIG_MAPPING` every family that upstream's `CONFIG_MAPPING_NAMES` does not hold (lazily, see
    `LazyConfigRegistrations`; configs registered by users are kept and win). Idempotent; imports no config module.
    (Their layers are built by the registry row of the architecture they derive from:
    `supported_models.SUPPORTED_ARCHITECTURES` lists each family as that row.)
    """
    with _lock:
        if not isinstance(config_mapping._extra_content, LazyConfigRegistrations):
            missing = {
                model_type: checkpoint_format
                for model_type, checkpoint_format in CHECKPOINT_FORMATS.items()
                if model_type not in config_mapping._mapping
            }
            config_mapping._extra_content = LazyConfigRegistrations({**missing, **config_mapping._extra_content})


def register_models(model_type: str) -> None:
    """Registers with the Auto classes the model classes of the family `model_type`, and with the checkpoint
    conversion mappings its tensor-name mapping, where upstream's own tables do not hold them. Idempotent and cheap
    after the first call.

    One family at a time: registering a family imports its modeling code (GPT-OSS, NemotronH, ...), which a process
    that loads a checkpoint of another family never needs (it cost a fresh process about 20 ms of imports per load of
    a gpt-oss-puzzle or Nemotron-NAS checkpoint when every family was registered together).

    `exist_ok=True` is required, not a shortcut: upstream's `_LazyAutoMapping.register` (transformers 5.23) silently
    ignores classes from `transformers.*` modules without it.
    """
    with _lock:
        if model_type in _registered_models:
            return
        from ...conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
        from ...models.auto import modeling_auto

        checkpoint_format = CHECKPOINT_FORMATS[model_type]
        config_class = checkpoint_format.config_class()
        conversion = checkpoint_format.weight_conversion
        if conversion is not None and get_checkpoint_conversion_mapping(model_type) is None:
            register_checkpoint_conversion_mapping(model_type, get_checkpoint_conversion_mapping(conversion))
        for auto_name, model_name in checkpoint_format.models.items():
            auto_class = getattr(modeling_auto, auto_name)
            if config_class in auto_class._model_mapping:  # upstream's mapping names it (or it is registered)
                continue
            auto_class.register(config_class, checkpoint_format.model_class(model_name), exist_ok=True)
        _registered_models.add(model_type)
