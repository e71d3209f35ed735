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

Importing this package activates the feature (the installed `.pth` hook does so automatically when Transformers'
modeling code is imported, unless `TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE=0`).
"""

from .activation import activate, deactivate, is_active
from .cache_utils import LayerKVCacheSize, kv_cache_bytes, layers_without_kv_cache
from .configuration_utils import HeterogeneousConfigError
from .modeling_utils import UnsupportedArchitectureError
from .skip_utils import ReturnEntry, SkippedModule, get_skip_replacement
from .supported_models import (
    NATIVE_PER_LAYER_MODEL_TYPES,
    SUPPORTED_ARCHITECTURES,
    ArchitectureSpec,
    SkipTarget,
    register_architecture,
)


__all__ = [
    "ArchitectureSpec",
    "HeterogeneousConfigError",
    "LayerKVCacheSize",
    "NATIVE_PER_LAYER_MODEL_TYPES",
    "ReturnEntry",
    "SUPPORTED_ARCHITECTURES",
    "SkipTarget",
    "SkippedModule",
    "UnsupportedArchitectureError",
    "activate",
    "deactivate",
    "get_skip_replacement",
    "is_active",
    "kv_cache_bytes",
    "layers_without_kv_cache",
    "register_architecture",
]

activate()
