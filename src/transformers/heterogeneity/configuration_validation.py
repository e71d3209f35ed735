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
"""Checks of a `per_layer_config` as a whole, made when it is given (`normalize_per_layer_config`) and when a
`config.json` holding one is read (`check_duplicate_keys`), before upstream's config half stores it.

Upstream's `_apply_heterogeneous_config` turns every key into a layer index with `int(key)`, so `True` became layer 1,
`1.5` layer 1, and `1` and `"1"` one layer, the last one winning; it drops overrides equal to the global value, so a
`head_dim` of `16.0` where the global is `16` vanished; a non-dict raised `AttributeError` and bad values came out of
`@strict` validators as `TypeError` or `StrictDataclassClassValidationError`. And `json.loads` keeps the last of two
equal keys, so a `config.json` holding layer `"1"` twice silently lost one. Each of these is refused here with a
`HeterogeneousConfigError` naming the layer, the attribute and the value. The checks of a layer's values against its
architecture (skip names, model-level attributes, KV-head divisibility) are made when the model is built
(`configuration_utils.validate_layer_overrides`).
"""

from __future__ import annotations

import difflib
import json
import numbers
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from ..configuration_utils import PreTrainedConfig
from .configuration_utils import DEPRECATED_SKIP_NAMES, HeterogeneousConfigError, _check_value_type, _is_int


__all__ = ["check_duplicate_keys", "normalize_per_layer_config", "parse_layer_key"]

# Keys of a config file whose values describe layers: duplicate keys inside them are refused.
PER_LAYER_KEYS = ("per_layer_config", "block_configs")


def normalize_per_layer_config(config: PreTrainedConfig, per_layer_config: Any) -> dict[int, dict[str, Any]]:
    """Checks a `per_layer_config` and puts it into the form upstream's config half stores, before it does.

    Called by upstream's `_apply_heterogeneous_config` (the `per_layer_config` init argument and setter) with the
    value as given; returns it with integer keys. Deprecated skip names are replaced by their new spelling, with a
    `FutureWarning`; a config saved afterwards writes the new names.

    Raises:
        HeterogeneousConfigError: `per_layer_config` is not a dict; a key is not a layer index in range (an integer,
            not a bool, or its decimal digits as a string, zero-padded or not) or names a layer twice; a layer's
            overrides are not a dict; an attribute is unknown (with the nearest known name) or its value has the wrong
            type or is not a positive size.
    """
    if not isinstance(per_layer_config, Mapping):
        raise HeterogeneousConfigError(
            f"`per_layer_config` must be a dict mapping layer indices to dicts of overrides, e.g. "
            f"{{3: {{'intermediate_size': 512}}}}; got a {type(per_layer_config).__name__}: {per_layer_config!r:.80}."
        )
    num_layers = _num_hidden_layers(config)
    given_as: dict[int, Any] = {}
    normalized = {}
    for key, overrides in per_layer_config.items():
        layer_idx = _layer_index(key, num_layers)
        if layer_idx in given_as:
            raise HeterogeneousConfigError(
                f"`per_layer_config` gives layer {layer_idx} twice, as {given_as[layer_idx]!r} and {key!r}; merge "
                "them into one entry."
            )
        given_as[layer_idx] = key
        normalized[layer_idx] = _normalize_overrides(config, layer_idx, overrides)
    _check_attribute_names(config, normalized)
    native = config.model_type in _native_model_types()
    for layer_idx, overrides in normalized.items():
        for name, value in overrides.items():
            if name != "skip":
                _check_declared_type(config, layer_idx, name, value)
                if not native:  # upstream's own per-layer models may use other values (sizes of 0)
                    _check_value_type(config, layer_idx, name, value)
    return normalized


def _num_hidden_layers(config: PreTrainedConfig) -> int:
    num_layers = config._getattr_without_heterogeneous_validation("num_hidden_layers", None)
    if not _is_int(num_layers) or num_layers < 0:
        raise HeterogeneousConfigError(
            f"`num_hidden_layers` must be a non-negative integer for `per_layer_config` to index layers; got "
            f"{num_layers!r}."
        )
    return num_layers


def parse_layer_key(key: Any) -> int | None:
    """The layer index a `per_layer_config` key spells, range unchecked: an integer, or its decimal digits as a
    string, zero-padded or not (upstream writes `"01"` ... `"10"` so that JSON keys sort by layer); `None` for
    anything else (booleans, floats, other strings)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and re.fullmatch(r"[0-9]+|-[1-9][0-9]*", key):
        return int(key)
    return None


def _layer_index(key: Any, num_layers: int) -> int:
    """The layer a `per_layer_config` key names (`parse_layer_key`), in range."""
    layer_idx = parse_layer_key(key)
    if layer_idx is None:
        hint = ""
        if isinstance(key, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", key):
            hint = f"; write layer {int(key)} as {int(key)} or '{int(key)}'"
        raise HeterogeneousConfigError(
            f"`per_layer_config` key {key!r} ({type(key).__name__}) is not a layer index: keys are integers in "
            f"[0, {num_layers}) or their decimal digits as strings (booleans and floats are refused){hint}."
        )
    if not 0 <= layer_idx < num_layers:
        raise HeterogeneousConfigError(
            f"`per_layer_config` key {key!r} is out of range: this config has {num_layers} layers, so keys are in "
            f"[0, {num_layers})."
        )
    return layer_idx


def _normalize_overrides(config: PreTrainedConfig, layer_idx: int, overrides: Any) -> dict[str, Any]:
    if not isinstance(overrides, Mapping):
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: the overrides must be a dict of attribute -> value, got {overrides!r:.80} "
            f"({type(overrides).__name__}); give {{}} or leave the layer out to keep the global values."
        )
    for name in overrides:
        if not isinstance(name, str):
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: attribute names are strings, got {name!r} ({type(name).__name__})."
            )
    overrides = dict(overrides)
    if "skip" in overrides:
        skips = overrides["skip"]
        if not isinstance(skips, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in skips):
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `skip` must be a list of sub-block names such as ['attention'], got {skips!r}."
            )
        if DEPRECATED_SKIP_NAMES.keys() & set(skips):
            renamed = [DEPRECATED_SKIP_NAMES.get(name, name) for name in skips]
            warnings.warn(
                f"Layer {layer_idx}: skip names {sorted(DEPRECATED_SKIP_NAMES.keys() & set(skips))} are deprecated "
                f"and will be refused in a future version; use {sorted(set(renamed) - set(skips))} "
                f"({', '.join(f'{old!r} -> {new!r}' for old, new in DEPRECATED_SKIP_NAMES.items())}).",
                FutureWarning,
                stacklevel=5,
            )
            overrides["skip"] = renamed
    return overrides


def _check_attribute_names(config: PreTrainedConfig, per_layer_overrides: dict[int, dict[str, Any]]) -> None:
    """Refuses attributes the config does not have, where upstream would refuse them as "missing" (an attribute
    that the global config lacks may still be given for every layer), naming the nearest known attribute."""
    num_layers = _num_hidden_layers(config)
    for layer_idx, overrides in sorted(per_layer_overrides.items()):
        for name in sorted(set(overrides) - {"skip"}):
            if config._hasattr_without_heterogeneous_validation(name):
                continue
            if len(per_layer_overrides) == num_layers and all(name in o for o in per_layer_overrides.values()):
                continue
            known = _attribute_names(config)
            nearest = difflib.get_close_matches(name, known, n=1)
            suggestion = f"; did you mean `{nearest[0]}`?" if nearest else "; no attribute of the config is close."
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: unknown attribute `{name}`={overrides[name]!r} for {type(config).__name__} (not "
                f"an attribute of the config, and not given for every layer){suggestion}"
            )


def _attribute_names(config: PreTrainedConfig) -> list[str]:
    names = set(getattr(type(config), "__dataclass_fields__", {})) | set(vars(config))
    names |= set(getattr(config, "attribute_map", {}))
    return sorted(name for name in names if not name.startswith("_"))


def _check_declared_type(config: PreTrainedConfig, layer_idx: int, name: str, value: Any) -> None:
    """Runs the `@strict` validators upstream declares for field `name` (type, then custom checks), as setting the
    attribute on the layer's config would, but before upstream drops overrides equal to the global value."""
    for validator in getattr(type(config), "__validators__", {}).get(name, ()):
        try:
            validator(value)
        except TypeError as error:
            declared = type(config).__dataclass_fields__[name].type
            declared = getattr(declared, "__name__", None) or str(declared)
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{name}`={value!r} has type {type(value).__name__}, but {type(config).__name__} declares "
                f"`{name}` as {declared}."
            ) from error
        except ValueError as error:
            raise HeterogeneousConfigError(f"Layer {layer_idx}: `{name}`={value!r} is refused: {error}") from error


def _native_model_types() -> frozenset[str]:
    from .supported_models import NATIVE_PER_LAYER_MODEL_TYPES  # imports torch: only once a per-layer config exists

    return NATIVE_PER_LAYER_MODEL_TYPES


def check_duplicate_keys(json_file: str | os.PathLike, config_dict: dict[str, Any]) -> None:
    """Refuses a key given twice inside the per-layer parts (`PER_LAYER_KEYS`, at any depth) of the config file that
    upstream read into `config_dict`: `json.loads` keeps the last of two equal keys, so one layer's overrides (or one
    field of a block) would silently be lost. Files without per-layer parts are not read again; duplicates elsewhere
    keep upstream's behaviour.

    Raises:
        HeterogeneousConfigError: naming the file, where the key is and the key.
    """
    if not any(True for _ in _per_layer_parts(config_dict, "")):
        return
    repeated_keys: dict[int, list[str]] = {}

    def remember_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        parsed = dict(pairs)
        if len(parsed) < len(pairs):
            keys = [key for key, _ in pairs]
            repeated_keys[id(parsed)] = [key for idx, key in enumerate(keys) if key in keys[:idx]]
        return parsed

    with open(json_file, encoding="utf-8") as reader:
        parsed = json.loads(reader.read(), object_pairs_hook=remember_repeated_keys)  # kept alive: the ids stay valid
    for where, value in _per_layer_parts(parsed, ""):
        for path, mapping in _mappings(value, where):
            if id(mapping) in repeated_keys:
                key = repeated_keys[id(mapping)][0]
                raise HeterogeneousConfigError(
                    f"`{path}` gives the key {key!r} more than once in {json_file}; a JSON reader keeps only the "
                    "last, so the others would be lost. Give each key once."
                )


def _per_layer_parts(value: Any, path: str):
    """(path, value) of every `PER_LAYER_KEYS` entry in a parsed config file, sub-configs included."""
    if isinstance(value, dict):
        for key, item in value.items():
            item_path = f"{path}.{key}" if path else key
            if key in PER_LAYER_KEYS:
                yield item_path, item
            else:
                yield from _per_layer_parts(item, item_path)
    elif isinstance(value, list):
        for idx, item in enumerate(value):
            yield from _per_layer_parts(item, f"{path}[{idx}]")


def _mappings(value: Any, path: str):
    """(path, mapping) of `value` and every mapping inside it."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _mappings(item, f"{path}[{key!r}]")
    elif isinstance(value, list):
        for idx, item in enumerate(value):
            yield from _mappings(item, f"{path}[{idx}]")
