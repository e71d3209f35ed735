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
"""Per-layer construction of heterogeneous models.

The mechanism, the same wherever the package lives (installed over stock Transformers or inside it):

1. `PreTrainedModel.__init__` calls `model_init_started(model, config)` first. The model is pushed on the models
   under construction of this thread / task (a `ContextVar`), and for a heterogeneous config the model's spec is found
   (its class's `_layer_cls` / `_skip_descriptors`, else the registry row of its `model_type`), every layer's overrides
   are checked, and the spec's decoder-layer class (and rotary embedding class) is wrapped once.
2. The wrapped layer `__init__` builds each layer from `config.per_layer_config[layer_idx]`, checks that every
   override was read, and swaps skipped members for parameter-free replacements. The spec used is that of the model
   under construction that owns the layer's config (the innermost one whose `config` is that object), so a layer
   built inside another model's `__init__` still gets its own model's skips.
3. `PreTrainedModel.post_init` calls `model_init_finished(model)`: the model leaves the stack, runs its layers on the
   decoder backend the run asked for, and a base model whose layers have their own windows gets per-layer masks.

A model class whose own `__init__` reads a per-layer attribute for a model-level feature (GPT-OSS's causal-LM head
keeps the expert counts for its load-balancing loss) reads it through `model_init_config`, and the feature is refused
while the layers' values differ.

Wrappers are installed once per class and keep no per-model state: a homogeneous config goes straight to the stock
`__init__`, so nested, sequential and concurrent constructions cannot interfere and nothing leaks into later
homogeneous models.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from ..configuration_utils import PreTrainedConfig
from ..utils import logging
from .backends.modeling import apply_decoder_backend
from .backends.selection import (
    DecoderBackendError,
    plan_layer_backends,
    requested_decoder_backend,
    transformer_engine_model_types,
)
from .cache_utils import SKIPS_WITHOUT_CACHE_STATE
from .configuration_utils import (
    LAYER_TABLE_ATTRIBUTES,
    MODEL_LEVEL_ATTRIBUTES,
    ConfigStateCache,
    HeterogeneousConfigError,
    get_layer_overrides,
    global_view,
    layer_overrides_key,
    make_layer_config,
    model_level_config,
    stop_recording_reads,
    validate_layer_overrides,
)
from .masking_utils import (
    attach_per_layer_masks,
    check_mask_overrides,
    has_per_layer_masks,
    mask_attributes_handled,
)
from .rotary_utils import attach_layer_rotary_embedding
from .supported_models import (
    SUPPORTED_ARCHITECTURES,
    HeterogeneousModelSpec,
    ModelInitReads,
    get_architecture,
    get_config_spec,
    reads_per_layer_config_natively,
    resolve_architecture,
    spec_from_model_class,
)
from .tensor_parallel import check_tensor_parallel


logger = logging.get_logger(__name__)

__all__ = [
    "UnsupportedArchitectureError",
    "model_init_config",
    "model_init_finished",
    "model_init_started",
    "models_under_construction",
    "wrap_architecture_classes",
]

# The `PreTrainedModel`s whose `__init__` is running in this thread / task, outermost first (weak references: a model
# whose `__init__` raised before `post_init` must not be kept alive by this).
_MODELS_UNDER_CONSTRUCTION: contextvars.ContextVar[tuple[weakref.ref, ...]] = contextvars.ContextVar(
    "heterogeneity_models_under_construction", default=()
)

_wrap_lock = threading.Lock()
# Wrapped classes and their stock `__init__` (`None`: inherited), so that the wrappers can be removed.
_original_inits: dict[type, Callable | None] = {}


class UnsupportedArchitectureError(HeterogeneousConfigError):
    """A heterogeneous config given to a model class that neither we support nor reads `per_layer_config` itself."""


def is_heterogeneous(config: Any) -> bool:
    return isinstance(config, PreTrainedConfig) and config.is_heterogeneous


def models_under_construction() -> list[nn.Module]:
    """The models whose `__init__` is running in this thread / task, innermost first."""
    models = (ref() for ref in reversed(_MODELS_UNDER_CONSTRUCTION.get()))
    return [model for model in models if model is not None]


def model_init_started(model: nn.Module, config: Any) -> None:
    """Called first in `PreTrainedModel.__init__`: `model` is under construction until `model_init_finished`, and a
    heterogeneous config readies per-layer construction for its class.

    Raises:
        UnsupportedArchitectureError: `config` is heterogeneous but `type(model)` cannot honour it.
    """
    _MODELS_UNDER_CONSTRUCTION.set((*_MODELS_UNDER_CONSTRUCTION.get(), weakref.ref(model)))
    try:
        _prepare_model_init(type(model), config)
    except Exception:
        _leave_construction(model)
        raise


def model_init_finished(model: nn.Module) -> None:
    """Called last in `PreTrainedModel.post_init`: `model` is built. Runs its layers on the decoder backend the run
    asked for (`backends/`), then gives the layers of a base model with per-layer windows or chunk sizes their own
    masks (`masking_utils.py`), so that the layers that end up in the model are the ones that get them. A model that
    is not under construction (`post_init` called again later) is left as it is."""
    if not _leave_construction(model):
        return
    config = model.config
    if requested_decoder_backend() is not None:
        _apply_decoder_backend(model, config)
    if not is_heterogeneous(config) or reads_per_layer_config_natively(type(model), config):
        return
    reads = _model_init_reads(type(model), config)
    differing = None if reads is None else _first_differing_layer(config, reads.attributes)
    if differing is not None:
        model.register_forward_pre_hook(functools.partial(_refuse_feature, reads, differing), with_kwargs=True)
    spec = _model_spec(type(model), config)
    if spec.base_model_cls is None or not isinstance(model, spec.base_model_cls) or not has_per_layer_masks(config):
        return
    attach_per_layer_masks(model, model.layers, config)
    if spec.base_model_forward_reads.intersection(config.per_layer_attributes):
        model.config = model_level_config(config, spec.base_model_forward_reads)


def _leave_construction(model: nn.Module) -> bool:
    """Takes `model` (and any model above it, whose `__init__` cannot still be running) off the stack; whether it was
    on it."""
    stack = _MODELS_UNDER_CONSTRUCTION.get()
    for position in range(len(stack) - 1, -1, -1):
        if stack[position]() is model:
            _MODELS_UNDER_CONSTRUCTION.set(stack[:position])
            return True
    return False


def _prepare_model_init(model_cls: type[nn.Module], config: Any) -> None:
    if not is_heterogeneous(config) or reads_per_layer_config_natively(model_cls, config):
        return
    spec = _model_spec(model_cls, config)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"{model_cls.__name__} (model_type '{config.model_type}') cannot be built with `per_layer_config` "
            f"{sorted(config.per_layer_attributes | _skip_names(config))}: its layers would silently ignore it. "
            f"Supported: {sorted(SUPPORTED_ARCHITECTURES)}, models that read `per_layer_config` natively, and "
            "custom models that declare `_layer_cls` and `_skip_descriptors`."
        )
    # Check every layer before anything is built: the model's own `__init__` reads model-level attributes first.
    for layer_idx in range(config.num_hidden_layers):
        overrides = get_layer_overrides(config, layer_idx)
        _check_layer_overrides(config, layer_idx, overrides, spec)
        shared = sorted(spec.model_reads.intersection(overrides))
        if shared and not config.allow_global_per_layer_attribute_access:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{shared[0]}`={overrides[shared[0]]!r} is also read by {model_cls.__name__}'s own "
                f"modules (not only its layers), which would need one global value. Set "
                "`config.allow_global_per_layer_attribute_access = True` to let them use the global value."
            )
    _check_quantization(config, spec)
    check_tensor_parallel(config)
    check_mask_overrides(config, mask_attributes_handled(config, spec.base_model_cls is not None))
    _wrap_layer_classes(spec)


def _model_spec(model_cls: type[nn.Module], config: PreTrainedConfig) -> HeterogeneousModelSpec | None:
    """How `model_cls` builds its layers from `config`: its class's declaration; else, for a stock class built inside
    a custom model's `__init__` with that model's own config (its base model), the custom model's declaration; else
    the registry row of the config's `model_type`."""
    spec = spec_from_model_class(model_cls)
    if spec is not None:
        return spec
    for model in models_under_construction():
        if model.__dict__.get("config") is config:
            spec = spec_from_model_class(type(model))
            if spec is not None:
                return spec
    return get_config_spec(config)


def model_init_config(model_cls: type[nn.Module], config: Any) -> Any:
    """The config that `model_cls`'s own `__init__` reads model-level values from: for a heterogeneous config whose
    registry row says that a class of `model_cls` reads per-layer attributes for a model-level feature
    (`ArchitectureSpec.model_init_reads`), a view of the same config that reads them as their global value (its
    layers still get theirs; `model_init_finished` refuses the feature while they differ between layers); else
    `config` itself. Called first in such an `__init__` (GPT-OSS's causal-LM head)."""
    if not is_heterogeneous(config):
        return config
    reads = _model_init_reads(model_cls, config)
    return config if reads is None else model_level_config(config, reads.attributes)


def _model_init_reads(model_cls: type[nn.Module], config: PreTrainedConfig) -> ModelInitReads | None:
    """What a class of `model_cls` reads per-layer for a model-level feature, by the registry row of `config`."""
    architecture = get_architecture(config)
    if architecture is None or not architecture.model_init_reads:
        return None
    module = importlib.import_module(architecture.modeling_module)
    for class_name, reads in architecture.model_init_reads.items():
        if issubclass(model_cls, getattr(module, class_name)):
            return reads
    return None


def wrap_architecture_classes(model_type: str) -> None:
    """Wraps the layer and rotary classes of a registry row for per-layer construction, so that a layer built on its
    own from a heterogeneous config (`LlamaDecoderLayer(config, layer_idx)`) is built per layer too, not only the
    layers of a model (which `model_init_started` readies). Imports the row's modeling module."""
    _wrap_layer_classes(resolve_architecture(model_type))


def _wrap_layer_classes(spec: HeterogeneousModelSpec) -> None:
    _wrap_class(spec.layer_cls, functools.partial(_build_layer, spec=spec), spec.config_arg, spec.layer_idx_arg)
    if spec.rotary_cls is not None:
        _wrap_class(spec.rotary_cls, _build_with_global_view, "config")


def _first_differing_layer(config: PreTrainedConfig, attributes: frozenset[str]) -> tuple[int, str, Any] | None:
    for layer_idx in range(config.num_hidden_layers):
        overrides = get_layer_overrides(config, layer_idx)
        for name in sorted(attributes.intersection(overrides)):
            return layer_idx, name, overrides[name]
    return None


def _refuse_feature(reads: ModelInitReads, differing: tuple, model: nn.Module, args: tuple, kwargs: dict) -> None:
    requested = kwargs.get(reads.feature)
    if requested is None:
        requested = getattr(model.config, reads.feature, False)
    if requested:
        layer_idx, name, value = differing
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: `{name}`={value!r} differs from the global value, but `{reads.feature}=True` makes "
            f"{type(model).__name__} compute with one `{name}` for all layers "
            f"({model.config._getattr_without_heterogeneous_validation(name)!r}); leave `{reads.feature}` off."
        )


def _apply_decoder_backend(model: nn.Module, config: Any) -> None:
    """Swaps the layers of a base model for the requested backend; a model of an architecture without a base model in
    the registry is refused (by `plan_layer_backends`) rather than silently built stock."""
    spec = _model_spec(type(model), config) if isinstance(config, PreTrainedConfig) else None
    if spec is None or spec.base_model_cls is None:
        plan_layer_backends(config, requested_decoder_backend())  # raises for an architecture TE cannot run
        raise DecoderBackendError(
            f"{type(model).__name__}: decoder_backend needs an architecture whose layers are in the registry "
            f"(supported: {transformer_engine_model_types()})."
        )
    if isinstance(model, spec.base_model_cls):
        apply_decoder_backend(model)


def _check_quantization(config: PreTrainedConfig, spec: HeterogeneousModelSpec) -> None:
    """Refuses per-layer values that a quantization method's module replacement would read from the global config."""
    quantization_config = getattr(config, "quantization_config", None)
    if quantization_config is None:
        return
    if isinstance(quantization_config, dict):
        dequantize, method = quantization_config.get("dequantize"), quantization_config.get("quant_method")
    else:  # `dequantize` is a loading attribute, which upstream's `to_dict` leaves out
        dequantize = getattr(quantization_config, "dequantize", False)
        method = getattr(quantization_config, "quant_method", None)
    if dequantize:
        return  # the weights are dequantized into the stock modules, which have each layer's shapes
    method = getattr(method, "value", method)  # upstream's `QuantizationMethod` enum
    global_reads = spec.quantization_reads.get(method, frozenset())
    for layer_idx in range(config.num_hidden_layers):
        overrides = get_layer_overrides(config, layer_idx)
        for name in sorted(global_reads.intersection(overrides)):
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: `{name}`={overrides[name]!r} cannot be set per layer for a {method}-quantized "
                f"{config.model_type} model: {method} rebuilds the quantized modules from the global config "
                f"(`{name}`={config._getattr_without_heterogeneous_validation(name, None)!r} for every layer). Load it "
                "with `quantization_config` dequantizing on load (e.g. `Mxfp4Config(dequantize=True)`)."
            )


def _skip_names(config: PreTrainedConfig) -> set[str]:
    return {name for layer_config in config.per_layer_config for name in layer_config.skip}


def _wrap_class(cls: type, build: Callable, config_arg: str, layer_idx_arg: str | None = None) -> None:
    """Wraps `cls.__init__` once so that calls with a heterogeneous config go through `build`.

    Homogeneous calls reach the stock `__init__` unchanged. The wrapper stays in place until `unwrap_classes()`
    (thread-safe, idempotent). This is the mechanism of the modeling half in both of its homes (the layer class's
    `__init__` is wrapped once, as upstream's PR #45332 does, so that no model file needs an edit), not a patch standing
    in for an upstream call.
    """
    with _wrap_lock:
        if cls in _original_inits:
            return
        original_init = cls.__init__
        parameters = list(inspect.signature(original_init).parameters)
        for name in (config_arg, layer_idx_arg):
            if name is not None and name not in parameters:
                raise TypeError(
                    f"{cls.__name__}.__init__ has no `{name}` argument (it takes {parameters[1:]}); declare the right "
                    "name in the model's heterogeneity spec."
                )
        config_position = parameters.index(config_arg) - 1  # positions exclude `self`
        layer_idx_position = parameters.index(layer_idx_arg) - 1 if layer_idx_arg else None

        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            config = _argument(args, kwargs, config_arg, config_position)
            if not is_heterogeneous(config):
                return original_init(self, *args, **kwargs)

            def call_with_config(new_config):
                if config_arg in kwargs:
                    return original_init(self, *args, **{**kwargs, config_arg: new_config})
                new_args = list(args)
                new_args[config_position] = new_config
                return original_init(self, *new_args, **kwargs)

            layer_idx = (
                None if layer_idx_position is None else _argument(args, kwargs, layer_idx_arg, layer_idx_position)
            )
            build(self, config=config, layer_idx=layer_idx, call_with_config=call_with_config)

        _original_inits[cls] = cls.__dict__.get("__init__")
        cls.__init__ = __init__


def unwrap_classes() -> None:
    """Gives every wrapped class its stock `__init__` back (called by `deactivate()`)."""
    with _wrap_lock:
        for cls, original_init in _original_inits.items():
            if original_init is None:
                del cls.__init__  # the class inherited its `__init__`
            else:
                cls.__init__ = original_init
        _original_inits.clear()


def _argument(args: tuple, kwargs: dict, name: str, position: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if position < len(args) else None


def _build_with_global_view(module: nn.Module, config: PreTrainedConfig, layer_idx: None, call_with_config) -> None:
    """Model-level modules (rotary embedding) hold the global values, not any one layer's."""
    call_with_config(global_view(config))


def _build_layer(
    layer: nn.Module,
    config: PreTrainedConfig,
    layer_idx: Any,
    call_with_config: Callable,
    spec: HeterogeneousModelSpec,
) -> None:
    """Builds one decoder layer from its own config, then applies its skips.

    The layer is built by the spec of the model that owns its config (`_layer_spec`); `spec` (of the model that first
    wrapped the layer class) is the last resort. Inside a model that reads `per_layer_config` itself (`MtpModel`), the
    layer is stock.
    """
    building = models_under_construction()
    if building and reads_per_layer_config_natively(type(building[0]), config):
        call_with_config(config)
        return
    spec = _layer_spec(building, config) or spec
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx < config.num_hidden_layers:
        raise HeterogeneousConfigError(
            f"{type(layer).__name__} was built with layer index {layer_idx!r}; a heterogeneous config needs an integer "
            f"in [0, {config.num_hidden_layers})."
        )
    overrides = get_layer_overrides(config, layer_idx)
    skips = overrides.get("skip", [])
    _check_layer_overrides(config, layer_idx, overrides, spec)  # also for layers built alone

    layer_config = make_layer_config(config, layer_idx)
    call_with_config(layer_config)
    honoured = stop_recording_reads(layer_config)
    # Windows and chunk sizes act through the masks (`masking_utils.py`), which were checked against them up front.
    honoured |= _mask_attributes_handled(config, spec.base_model_cls is not None)
    if spec.rotary_cls is not None:
        # A layer without attention reads no position embeddings: it needs no rotary embedding of its own.
        attends = not SKIPS_WITHOUT_CACHE_STATE.intersection(skips)
        honoured |= attach_layer_rotary_embedding(layer, spec.rotary_cls, config, layer_idx, overrides, attends)

    ignored = sorted(set(overrides) - honoured - {"skip"})
    if ignored:
        name = ignored[0]
        # Only what may be set per layer: not the model-level attributes it reads, nor those that the model's own
        # modules read too (refused up front in `_prepare_model_init`).
        refused = MODEL_LEVEL_ATTRIBUTES | LAYER_TABLE_ATTRIBUTES
        if not config.allow_global_per_layer_attribute_access:
            refused |= spec.model_reads
        settable = sorted(a for a in honoured - refused if not a.startswith("_"))
        raise HeterogeneousConfigError(
            f"Layer {layer_idx}: `{name}`={overrides[name]!r} is not read by {type(layer).__name__}, so it cannot be set "
            f"per layer for {config.model_type} (the layer would silently ignore it). Per-layer attributes it reads "
            f"include: {settable[:25]}."
        )
    for skip_name in skips:
        _apply_skip(layer, layer_config, layer_idx, skip_name, spec.skip_descriptors[skip_name])


def _layer_spec(building: list[nn.Module], config: PreTrainedConfig) -> HeterogeneousModelSpec | None:
    """The spec of the model under construction that owns a layer's config: the innermost model whose `config` is that
    object (a model built inside another model's `__init__`, with a config of its own, does not lend its skips to the
    outer model's layers), by its class's declaration or else the registry row of its config. A layer whose config no
    model under construction holds (built in a custom `__init__` from a config it made, or on its own) takes the
    innermost declaring model's spec, else the registry's."""
    owners = [model for model in building if model.__dict__.get("config") is config]
    for model in owners or building:
        spec = spec_from_model_class(type(model))
        if spec is not None:
            return spec
    return get_config_spec(config)


# What the construction of layers derives from a config's values alone, kept while the config holds them.
_per_config = ConfigStateCache()


def _mask_attributes_handled(config: PreTrainedConfig, has_base_model: bool) -> frozenset[str]:
    """`mask_attributes_handled`, once per config rather than per layer (it lists the config class's fields)."""
    kept = _per_config.for_config(config)
    key = ("mask attributes", has_base_model)
    if key not in kept:
        kept[key] = mask_attributes_handled(config, has_base_model)
    return kept[key]


def _check_layer_overrides(
    config: PreTrainedConfig, layer_idx: int, overrides: dict, spec: HeterogeneousModelSpec
) -> None:
    """Checks a layer's overrides against the config and the spec's skips. The checks read nothing else, so they run
    once per distinct set of overrides of a config, not for every layer three times (the model and its base model each
    check every layer up front, and each layer is checked again as it is built)."""
    checked = _per_config.for_config(config)
    skips = tuple((name, tuple(targets)) for name, targets in spec.skip_descriptors.items())
    key = (layer_overrides_key(config, layer_idx), skips)
    if key not in checked:
        validate_layer_overrides(config, layer_idx, overrides, set(spec.skip_descriptors))
        _check_skip_conflicts(spec, layer_idx, overrides.get("skip", []))
        checked[key] = True


def _check_skip_conflicts(spec: HeterogeneousModelSpec, layer_idx: int, skips: list[str]) -> None:
    """Refuses two skips of one layer that replace the same member (`"attention"` and `"attention_replaced_by_linear"`)."""
    claimed: dict[str, str] = {}
    for skip_name in skips:
        for path in spec.skip_descriptors.get(skip_name, {}):
            if path in claimed:
                raise HeterogeneousConfigError(
                    f"Layer {layer_idx}: skips {claimed[path]!r} and {skip_name!r} both replace `{path}`; a sub-block "
                    "is either skipped or replaced, so keep one of them."
                )
            claimed[path] = skip_name


def _apply_skip(
    layer: nn.Module,
    layer_config: PreTrainedConfig,
    layer_idx: int,
    skip_name: str,
    targets: dict[str, tuple[type, ...]],
) -> None:
    """Swaps every member a skip names for its replacement, built from the layer's config (a linear sub-block needs
    `hidden_size`); checks all members before the first swap."""
    swaps = []
    for path in targets:
        parent_path, _, name = path.rpartition(".")
        parent = layer.get_submodule(parent_path) if parent_path else layer
        member = getattr(parent, name, None)
        replacement = next((r for r in targets[path] if isinstance(member, r.replaces)), None)
        if replacement is None:
            raise HeterogeneousConfigError(
                f"Layer {layer_idx}: skip {skip_name!r} replaces `{path}`, which is a {type(member).__name__}; "
                f"the skip descriptor only knows {[r.replaces.__name__ for r in targets[path]]}."
            )
        swaps.append((parent, name, replacement))
    for parent, name, replacement in swaps:
        setattr(parent, name, replacement.for_layer(layer_config))
