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
"""Per-layer heterogeneous models for Transformers: the modeling half of `per_layer_config`.

The package has two homes with the same files. Installed as an overlay on stock Transformers, importing it activates
the feature (the installed `.pth` hook does so automatically when Transformers is first imported, unless
`TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE=0`): `activation.py` patches upstream at run time. Inside Transformers (the
upstream patch series, `utils/upstream/`), upstream's files make the same calls directly and `activation.py` is not
there, so there is nothing to activate. The import itself is light: public names load their module on first access,
and each patch waits for the upstream module it patches.
"""

import importlib
from typing import TYPE_CHECKING


try:
    from .activation import activate, deactivate, is_active  # noqa: F401 (public: in `__all__` below)
except ModuleNotFoundError as error:  # inside Transformers: upstream's files call this package directly
    if error.name != f"{__name__}.activation":
        raise
    _ACTIVATION = []
else:
    _ACTIVATION = ["activate", "deactivate", "is_active"]


_LAZY_ATTRIBUTES = {
    "cache_utils": ["LayerKVCacheSize", "kv_cache_bytes", "kv_cache_total_bytes", "layers_without_kv_cache"],
    "configuration_utils": ["HeterogeneousConfigError"],
    "continuous_batching_plan": ["UnservableLayerError"],
    "derivation.api": ["derive"],
    "derivation.configs": ["CalibrationConfig", "DeriveError", "DistillationConfig", "InitConfig"],
    "derivation.search": ["search"],
    "modeling_utils": ["UnsupportedArchitectureError"],
    "skip_utils": ["ReturnEntry", "SkippedModule", "get_skip_replacement"],
    "supported_models": [
        "ArchitectureSpec",
        "NATIVE_PER_LAYER_MODEL_TYPES",
        "SUPPORTED_ARCHITECTURES",
        "SkipTarget",
        "register_architecture",
    ],
    "tensor_parallel": ["TensorParallelError"],
}
_MODULE_OF = {name: module for module, names in _LAZY_ATTRIBUTES.items() for name in names}

__all__ = [
    *_ACTIVATION,
    "NATIVE_PER_LAYER_MODEL_TYPES",
    "CalibrationConfig",
    "DeriveError",
    "DistillationConfig",
    "InitConfig",
    "SUPPORTED_ARCHITECTURES",
    "ArchitectureSpec",
    "HeterogeneousConfigError",
    "LayerKVCacheSize",
    "ReturnEntry",
    "SkipTarget",
    "SkippedModule",
    "TensorParallelError",
    "UnservableLayerError",
    "UnsupportedArchitectureError",
    "derive",
    "get_skip_replacement",
    "kv_cache_bytes",
    "kv_cache_total_bytes",
    "layers_without_kv_cache",
    "register_architecture",
    "search",
]

if TYPE_CHECKING:
    from .cache_utils import LayerKVCacheSize, kv_cache_bytes, kv_cache_total_bytes, layers_without_kv_cache
    from .configuration_utils import HeterogeneousConfigError
    from .continuous_batching_plan import UnservableLayerError
    from .derivation.api import derive
    from .derivation.configs import CalibrationConfig, DeriveError, DistillationConfig, InitConfig
    from .derivation.search import search
    from .modeling_utils import UnsupportedArchitectureError
    from .skip_utils import ReturnEntry, SkippedModule, get_skip_replacement
    from .supported_models import (
        NATIVE_PER_LAYER_MODEL_TYPES,
        SUPPORTED_ARCHITECTURES,
        ArchitectureSpec,
        SkipTarget,
        register_architecture,
    )
    from .tensor_parallel import TensorParallelError


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if _ACTIVATION:
    activate()
