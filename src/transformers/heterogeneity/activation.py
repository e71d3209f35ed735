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
"""The only module that patches upstream Transformers.

Each patch stands in for one call that upstream would make directly once this feature is merged; upstreaming means
deleting this module and adding those calls (each is marked `# hetero-patch:` here). Patches check the signature of
what they wrap and fail with the installed version in the message, are applied at most once (thread-safe), and
`deactivate()` undoes them. For homogeneous configs every patched function behaves exactly as upstream's.

Upstream's `monkey_patching.register_patch_mapping` is not used: it only acts inside `from_pretrained` /
`_from_config`, while direct `XForCausalLM(config)` construction must work too, and it scans every loaded
`transformers.*` module on each model construction, which would cost homogeneous models time.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable

from .. import __version__ as transformers_version
from .. import cache_utils, modeling_utils
from .cache_utils import mark_layers_without_kv_cache
from .modeling_utils import prepare_model_init


__all__ = ["activate", "deactivate", "is_active"]

_lock = threading.Lock()
_undo: list[Callable[[], None]] = []


def _check_signature(function: Callable, expected: list[str], symbol: str) -> None:
    parameters = list(inspect.signature(function).parameters)[: len(expected)]
    if parameters != expected:
        raise RuntimeError(
            f"transformers.heterogeneity cannot patch `{symbol}` of transformers {transformers_version}: expected "
            f"its arguments to start with {expected}, found {parameters}. This package is built for transformers "
            "5.23.0."
        )


def patch_pretrained_model_init() -> Callable[[], None]:
    """`PreTrainedModel.__init__` (transformers 5.23, `modeling_utils.py`).

    Upstream behaviour: stores the config; builds nothing per layer. Change: before that, a heterogeneous config
    readies per-layer construction of the model's decoder layers (or is refused for an architecture that would
    ignore it). Removal: upstream calls `prepare_model_init(type(self), config)` at the top of `__init__`.
    """
    cls = modeling_utils.PreTrainedModel
    original = cls.__init__
    _check_signature(original, ["self", "config"], "PreTrainedModel.__init__")

    @functools.wraps(original)
    def __init__(self, config, *inputs, **kwargs):
        prepare_model_init(type(self), config)  # hetero-patch: per-layer construction
        original(self, config, *inputs, **kwargs)

    cls.__init__ = __init__

    def undo() -> None:
        cls.__init__ = original

    return undo


def patch_cache_layer_types() -> Callable[[], None]:
    """`cache_utils.get_layer_types_and_kwargs` (transformers 5.23), read by `DynamicCache` and `StaticCache`.

    Upstream behaviour: a layer's cache type comes from `layer_types` or its window. Change: layers whose attention
    is skipped get the `"dummy"` type, so they allocate no KV and are never asked for the sequence length.
    Removal: upstream derives `"dummy"` from the layer's skips inside `get_layer_types_and_kwargs`.
    """
    original = cache_utils.get_layer_types_and_kwargs
    _check_signature(original, ["config"], "cache_utils.get_layer_types_and_kwargs")

    @functools.wraps(original)
    def get_layer_types_and_kwargs(config):
        layer_types, per_layer_kwargs = original(config)
        return mark_layers_without_kv_cache(config, layer_types, per_layer_kwargs)  # hetero-patch: no-KV layers

    cache_utils.get_layer_types_and_kwargs = get_layer_types_and_kwargs

    def undo() -> None:
        cache_utils.get_layer_types_and_kwargs = original

    return undo


PATCHES = (patch_pretrained_model_init, patch_cache_layer_types)


def activate() -> None:
    """Applies every patch once. Safe to call from several threads and several times."""
    with _lock:
        if not _undo:
            _undo.extend(patch() for patch in PATCHES)


def deactivate() -> None:
    """Restores upstream's functions. Models already built keep their per-layer structure."""
    with _lock:
        while _undo:
            _undo.pop()()


def is_active() -> bool:
    return bool(_undo)
