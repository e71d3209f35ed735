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
"""Deriving heterogeneous children from a pretrained parent (contract 11): `derive` (init from the parent's weights,
optional blockwise local distillation) and `search` (one variant per layer under a budget, by an exact MIP).

Names load their module on first access: `transformers.heterogeneity.derivation.loading` runs inside every
`from_pretrained` of a heterogeneous config and must not import the rest (SciPy, the search).
"""

import importlib
from typing import TYPE_CHECKING


_LAZY_ATTRIBUTES = {
    "api": ["derive", "save_child"],
    "configs": ["CalibrationConfig", "DeriveError", "DistillationConfig", "INIT_MODES", "InitConfig"],
    "records": ["DeriveRecord"],
    "search": ["SearchResult", "search"],
}
_MODULE_OF = {name: module for module, names in _LAZY_ATTRIBUTES.items() for name in names}

__all__ = [
    "INIT_MODES",
    "CalibrationConfig",
    "DeriveError",
    "DeriveRecord",
    "DistillationConfig",
    "InitConfig",
    "SearchResult",
    "derive",
    "save_child",
    "search",
]

if TYPE_CHECKING:
    from .api import derive, save_child
    from .configs import INIT_MODES, CalibrationConfig, DeriveError, DistillationConfig, InitConfig
    from .records import DeriveRecord
    from .search import SearchResult, search


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
