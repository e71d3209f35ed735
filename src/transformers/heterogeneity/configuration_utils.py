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
"""Per-layer configs for model construction, and the checks on per-layer values that need no model.

Upstream's `config.per_layer_config[i]` (`integrations/heterogeneity`) returns a snapshot copy of the config with layer
`i`'s overrides applied. Modules keep that copy as `self.config`, so two things are added here:

- the layer copy follows the global config's attention/experts implementation, so `model.set_attn_implementation`
  (which only updates `model.config`) still reaches every layer;
- the copy records which attributes are read while the layer is constructed, so an override the layer never reads
  (`vocab_size` per layer, a window on an architecture without windows) is refused instead of silently ignored.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..configuration_utils import PreTrainedConfig


__all__ = [
    "DEPRECATED_SKIP_NAMES",
    "HeterogeneousConfigError",
    "get_layer_overrides",
    "global_view",
    "layer_config",
    "make_layer_config",
    "model_level_config",
    "validate_on_every_layer",
]


class HeterogeneousConfigError(ValueError):
    """A `per_layer_config` that the model cannot honour; the message names the layer, attribute and value."""


# Attributes that shape the residual stream or the model around the layers: they cannot differ between layers even
# where a layer reads them.
MODEL_LEVEL_ATTRIBUTES = frozenset(
    {"hidden_size", "num_hidden_layers", "vocab_size", "tie_word_embeddings", "layer_types", "pad_token_id",
     "bos_token_id", "eos_token_id", "dtype", "torch_dtype", "model_type", "architectures"}
)  # fmt: skip

# Model-level lists that already describe every layer (Llama4: which layers are MoE, which use RoPE): a per-layer copy
# would make that layer disagree with the list the rest of the model reads, so the list itself is what changes.
LAYER_TABLE_ATTRIBUTES = frozenset({"moe_layers", "no_rope_layers"})

# Integer attributes for which `None` is meaningful ("no window").
OPTIONAL_INT_ATTRIBUTES = frozenset({"sliding_window", "attention_chunk_size"})

# Attributes set on a model's config at runtime (`set_attn_implementation`, `set_experts_implementation`): layer
# configs read them from the global config rather than keep the value they had when the layer was built.
RUNTIME_ATTRIBUTES = ("_attn_implementation_internal", "_experts_implementation_internal")


# Skip names renamed for clarity, and what they are now. `linear_attention` is also upstream's cache layer type of
# Mamba-style layers (`cache_utils.LinearAttentionLayer`), where here it meant "attention replaced by a linear map".
DEPRECATED_SKIP_NAMES = {
    "linear_attention": "attention_replaced_by_linear",
    "linear_mlp": "mlp_replaced_by_linear",
}


def get_layer_overrides(config: PreTrainedConfig, layer_idx: int) -> dict[str, Any]:
    """The overrides of layer `layer_idx` as validated and stored by upstream (`skip` included, if any)."""
    if not config.is_heterogeneous:
        return {}
    return dict(config._heterogeneity_spec.per_layer_overrides.get(layer_idx, {}))


def global_view(config: PreTrainedConfig) -> PreTrainedConfig:
    """A homogeneous copy of `config` holding the global values, for model-level modules (e.g. the rotary embedding)
    whose stock code reads attributes that are per-layer in this config."""
    view = copy.copy(config)
    view.__dict__.pop("_heterogeneity_spec", None)
    return view


class _LayerConfigMixin:
    """Mixed into a subclass of the model's config class for the configs that layers are built from."""

    _config_cls: type[PreTrainedConfig]

    def __init_subclass__(cls, **kwargs):
        # Upstream's `PreTrainedConfig.__init_subclass__` is deliberately not called: it makes every subclass a
        # dataclass anew (generated `__init__`, `__eq__`, ...: 1.3-1.6 ms per class in every fresh process), while
        # these classes add no field and their instances are copies of a config, never made by `__init__`. They
        # inherit the dataclass methods of the model's config class as they are.
        object.__init_subclass__(**kwargs)

    def __reduce_ex__(self, protocol):
        # The class is made at runtime, so pickle cannot find it by name: rebuild it from the model's config class.
        return _rebuild_layer_config, (self._config_cls, dict(object.__getattribute__(self, "__dict__")))


class _RecordingReadsMixin:
    """Records attribute reads while a layer is built. Swapped out afterwards: a custom `__getattribute__` costs time
    on every read and makes `torch.compile` break the graph."""

    def __getattribute__(self, name: str) -> Any:
        object.__getattribute__(self, "__dict__")["_recorded_reads"].add(name)
        return super().__getattribute__(name)


def _rebuild_layer_config(config_cls: type[PreTrainedConfig], state: dict[str, Any]) -> PreTrainedConfig:
    layer_config = object.__new__(_layer_config_classes(config_cls)[0])
    layer_config.__dict__.update(state)
    return layer_config


def _delegate_to_global_config(name: str) -> property:
    def getter(self):
        return getattr(self._global_config, name)

    def setter(self, value):
        setattr(self._global_config, name, value)

    return property(getter, setter, doc=f"`{name}` of the model's global config, which may change at runtime.")


_classes: dict[type, tuple[type, type]] = {}
_classes_lock = threading.Lock()


def _layer_config_classes(config_cls: type[PreTrainedConfig]) -> tuple[type, type]:
    """The layer-config class for `config_cls`, and its read-recording subclass used during construction."""
    with _classes_lock:
        if config_cls not in _classes:
            namespace = {name: _delegate_to_global_config(name) for name in RUNTIME_ATTRIBUTES}
            namespace.update(
                __module__=config_cls.__module__,
                __doc__=f"The config of one layer of a heterogeneous `{config_cls.__name__}` model.",
                _config_cls=config_cls,
            )
            layer_cls = type(f"{config_cls.__name__}ForLayer", (_LayerConfigMixin, config_cls), namespace)
            recording_cls = type(
                f"{config_cls.__name__}ForLayerRecordingReads",
                (_RecordingReadsMixin, layer_cls),
                {"__module__": config_cls.__module__},
            )
            _classes[config_cls] = (layer_cls, recording_cls)
        return _classes[config_cls]


class ConfigStateCache:
    """Values derived from a config, kept while the config holds the same values.

    The attribute values are compared by identity, so that setting any attribute in between drops what was kept, and
    no value's `__eq__` is called. One config per thread at a time: validation and construction go config by config.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def for_config(self, config: PreTrainedConfig) -> dict[Any, Any]:
        """The values kept for `config` (a dict to read and fill), empty when it changed or another config came."""
        state = config.__dict__
        identities = (tuple(state), tuple(map(id, state.values())))
        entry = getattr(self._local, "entry", None)
        if entry is None or entry[0]() is not config or entry[1] != identities:
            # The values are kept (`dict(state)`) so that their ids cannot be reused by other objects.
            entry = self._local.entry = (weakref.ref(config), identities, {}, dict(state))
        return entry[2]


def layer_overrides_key(config: PreTrainedConfig, layer_idx: int) -> str:
    """A key equal for the layers that have the same overrides (layers without any share one)."""
    return repr(sorted(config._heterogeneity_spec.per_layer_overrides.get(layer_idx, {}).items()))


_validation_state = ConfigStateCache()


def distinct_layers(config: PreTrainedConfig) -> list[int]:
    """The first layer of each distinct set of overrides (layers without overrides form one set), found once while
    `config` holds the same values (every validator of a config asks)."""
    kept = _validation_state.for_config(config)
    if "distinct layers" not in kept:
        first_of: dict[str, int] = {}
        for layer_idx in range(config.num_hidden_layers):
            first_of.setdefault(layer_overrides_key(config, layer_idx), layer_idx)
        kept["distinct layers"] = list(first_of.values())
    return kept["distinct layers"]


def validation_layer_config(config: PreTrainedConfig, layer_idx: int) -> PreTrainedConfig:
    """`config.per_layer_config[layer_idx]` for upstream's validators (`validate_on_every_layer`), built once
    while `config` holds the same values and shared by the validators: building a layer's config costs far more than
    any check run on it."""
    kept = _validation_state.for_config(config)
    key = ("layer", layer_idx)
    if key not in kept:
        kept[key] = config.per_layer_config[layer_idx]
    return kept[key]


_layer_config_templates = ConfigStateCache()


def make_layer_config(config: PreTrainedConfig, layer_idx: int) -> PreTrainedConfig:
    """Layer `layer_idx`'s config, recording attribute reads until `stop_recording_reads` is called.

    Upstream's `config.per_layer_config[layer_idx]` copies the config and sets each override through the strict
    dataclass's validating `__setattr__` (20-25 us on a 2-core VM). Layers with the same overrides share one such copy
    as a template, and each layer gets a config of its own with the template's attributes (a shallow copy, as
    upstream's).
    """
    templates = _layer_config_templates.for_config(config)
    key = layer_overrides_key(config, layer_idx)
    template = templates.get(key)
    if template is None:
        template = templates[key] = config.per_layer_config[layer_idx]
    # The copy's class, not `type(config)`: a model-level config (`model_level_config`) copies to its plain class.
    state = dict(template.__dict__, _global_config=config, _recorded_reads=set())
    for name in RUNTIME_ATTRIBUTES:
        state.pop(name, None)
    layer_config = object.__new__(_layer_config_classes(type(template))[1])
    object.__getattribute__(layer_config, "__dict__").update(state)
    return layer_config


def stop_recording_reads(layer_config: PreTrainedConfig) -> set[str]:
    """Ends read recording on a config made by `make_layer_config` and returns the attributes read."""
    # Past the config's `__setattr__` (strict validation) and `__getattribute__` (recording): neither applies here.
    object.__setattr__(layer_config, "__class__", _layer_config_classes(type(layer_config)._config_cls)[0])
    return object.__getattribute__(layer_config, "__dict__").pop("_recorded_reads")


def layer_config(config: PreTrainedConfig, layer_idx: int) -> PreTrainedConfig:
    """Layer `layer_idx`'s config as layers keep it (following the global attention implementation)."""
    config_of_layer = make_layer_config(config, layer_idx)
    stop_recording_reads(config_of_layer)
    return config_of_layer


class _ModelLevelConfigMixin:
    """A second face of a heterogeneous config, for a base model whose own forward reads an attribute that is
    per-layer (Mistral reads `sliding_window` to choose its mask function). It shares the config's state (the same
    `__dict__`, so every later change shows in both) and reads `_global_reads` as their global value instead of
    raising `AmbiguousGlobalPerLayerAttributeError`. Safe only because those reads no longer decide anything: the
    layers build their own masks (`masking_utils.py`)."""

    __slots__ = ("_config",)
    _global_reads: frozenset[str]

    def __getattribute__(self, name: str) -> Any:
        if name in type(self)._global_reads:
            return self._getattr_without_heterogeneous_validation(name)
        return super().__getattribute__(name)

    def __copy__(self) -> PreTrainedConfig:
        # A copy is a config of its own (upstream copies configs to make layer configs): copy the underlying config.
        return copy.copy(self._config)

    def __deepcopy__(self, memo: dict) -> PreTrainedConfig:
        return model_level_config(copy.deepcopy(self._config, memo), type(self)._global_reads)

    def __reduce_ex__(self, protocol):
        return model_level_config, (self._config, type(self)._global_reads)


def model_level_config(config: PreTrainedConfig, global_reads: frozenset[str]) -> PreTrainedConfig:
    """`config` for a base model whose forward reads `global_reads` (see `_ModelLevelConfigMixin`). Given a
    model-level config, returns one over the same config that reads the attributes of both as global."""
    if isinstance(config, _ModelLevelConfigMixin):
        global_reads = global_reads | type(config)._global_reads
        config = config._config
    config_cls = type(config)
    with _classes_lock:
        key = (config_cls, global_reads)
        if key not in _model_level_classes:
            view_cls = type(
                f"{config_cls.__name__}ForModel",
                (_ModelLevelConfigMixin, config_cls),
                {"__module__": config_cls.__module__, "_global_reads": global_reads, "__doc__": config_cls.__doc__},
            )
            _register_with_auto_classes(view_cls, config_cls)
            _model_level_classes[key] = view_cls
        view = object.__new__(_model_level_classes[key])
    view._config = config
    view.__dict__ = config.__dict__
    return view


_model_level_classes: dict[tuple[type, frozenset[str]], type] = {}


def _register_with_auto_classes(view_cls: type, config_cls: type) -> None:
    """Maps `view_cls` to whatever each Auto model mapping maps `config_cls` to.

    A model's `config` must work wherever a stock config does, and the Auto classes look models up by the exact
    config class (`type(config)`, `_LazyAutoMapping` in `models/auto/auto_factory.py`, transformers 5.23): without
    this, `AutoModel.from_config(model.config)` and every head class building its base model through `AutoModel`
    (`MistralForQuestionAnswering`) would refuse the view's class. `exist_ok=True`: upstream silently skips classes
    of `transformers.*` modules without it.
    """
    from ..models.auto import auto_factory, modeling_auto

    for mapping in vars(modeling_auto).values():
        if isinstance(mapping, auto_factory._LazyAutoMapping) and config_cls in mapping:
            mapping.register(view_cls, mapping[config_cls], exist_ok=True)


def validate_layer_overrides(
    config: PreTrainedConfig, layer_idx: int, overrides: dict[str, Any], known_skips: set[str]
) -> None:
    """Checks the values of one layer's overrides before anything is built.

    Raises:
        HeterogeneousConfigError: naming the layer, attribute and value.
    """
    for name in sorted(set(overrides.get("skip", [])) - known_skips):
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: unknown skip {name!r} for {config.model_type}; "
            f"this architecture can skip {sorted(known_skips) or 'nothing'}."
        )
    for name, value in overrides.items():
        if name == "skip":
            continue
        if name in MODEL_LEVEL_ATTRIBUTES:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{name}`={value!r} cannot be set per layer; it is a model-level attribute "
                f"(global value {config._getattr_without_heterogeneous_validation(name, None)!r})."
            )
        if name in LAYER_TABLE_ATTRIBUTES:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{name}`={value!r} cannot be set per layer; it lists every layer (global value "
                f"{config._getattr_without_heterogeneous_validation(name, None)!r}), so change the global list instead."
            )
        _check_value_type(config, layer_idx, name, value)
    heads = _layer_value(config, overrides, "num_attention_heads")
    kv_heads = _layer_value(config, overrides, "num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads != 0:
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: `num_key_value_heads`={kv_heads} does not divide `num_attention_heads`={heads}; "
            "each key/value head must serve the same number of query heads."
        )


def _layer_value(config: PreTrainedConfig, overrides: dict[str, Any], name: str) -> Any:
    if name in overrides:
        return overrides[name]
    return config._getattr_without_heterogeneous_validation(name, None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value_type(config: PreTrainedConfig, layer_idx: int, name: str, value: Any) -> None:
    global_value = config._getattr_without_heterogeneous_validation(name, None)
    if name in OPTIONAL_INT_ATTRIBUTES or _is_int(global_value):
        if value is None and name in OPTIONAL_INT_ATTRIBUTES:
            return
        if not _is_int(value) or value <= 0:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{name}` must be a positive integer, got {value!r} (global value {global_value!r})."
            )
        return
    accepted = (int, float) if isinstance(global_value, float) else type(global_value)
    wrong_type = not isinstance(value, accepted) or (isinstance(value, bool) and not isinstance(global_value, bool))
    if value is not None and global_value is not None and wrong_type:
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: `{name}`={value!r} has type {type(value).__name__}, but the global value "
            f"{global_value!r} is a {type(global_value).__name__}."
        )


def validate_on_every_layer(config: PreTrainedConfig, validator: Callable[[PreTrainedConfig], None]) -> None:
    """Runs one `@strict` class validator of a config: on the config itself when it is homogeneous, else on every
    layer's config, once per distinct set of overrides (layers with the same overrides have the same config; the error
    names the first of them). Each layer's config holds every global value too, so no check is lost, and none reads a
    per-layer attribute on the global config (`AmbiguousGlobalPerLayerAttributeError`).

    Raises:
        HeterogeneousConfigError: naming the layer, for what the validator refuses.
    """
    from huggingface_hub.errors import StrictDataclassError

    if not config.is_heterogeneous:
        validator(config)
        return
    for layer_idx in distinct_layers(config):
        try:
            validator(validation_layer_config(config, layer_idx))
        except (ValueError, TypeError, ArithmeticError, StrictDataclassError) as error:
            raise HeterogeneousConfigError(f"Layer {layer_idx}: {error}") from error
