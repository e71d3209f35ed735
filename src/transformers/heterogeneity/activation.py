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

Each patch stands in for code that upstream would have directly once this feature is merged; upstreaming means
deleting this module and making those calls (each is marked `# hetero-patch:` here). Patches check what they wrap
and fail with the installed version in the message, are applied at most once (thread-safe), and `deactivate()`
undoes them. For homogeneous configs every patched function behaves exactly as upstream's.

Each patch waits until the upstream module it patches has been imported completely (`after_import`), so activating
imports nothing (a process that only uses tokenizers never loads the modeling code because of us) and no patch reads a
half-executed module, whatever the user imports first. A patch imports the code it calls into when it is first called,
not when it is applied: that code imports other upstream modules, which may still be executing at that moment.

Upstream's `monkey_patching.register_patch_mapping` is not used: it only acts inside `from_pretrained` /
`_from_config`, while direct `XForCausalLM(config)` construction must work too, and it scans every loaded
`transformers.*` module on each model construction, which would cost homogeneous models time.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable
from types import ModuleType

from transformers_heterogeneity_hook import after_import, forget


__all__ = ["activate", "deactivate", "is_active"]

SUPPORTED_TRANSFORMERS_VERSION = "5.23.0"

_lock = threading.RLock()
_active = False
_undo: list[Callable[[], None]] = []


class UpstreamMismatchError(RuntimeError):
    """The installed Transformers does not have the shape a patch was written for."""


def _mismatch(symbol: str, detail: str) -> UpstreamMismatchError:
    from .. import __version__

    return UpstreamMismatchError(
        f"transformers.heterogeneity cannot patch `{symbol}` of transformers {__version__}: {detail}. This package is "
        f"built for transformers {SUPPORTED_TRANSFORMERS_VERSION}."
    )


def _check_signature(function: Callable, expected: list[str], symbol: str) -> None:
    parameters = list(inspect.signature(function).parameters)[: len(expected)]
    if parameters != expected:
        raise _mismatch(symbol, f"expected its arguments to start with {expected}, found {parameters}")


def patch_pretrained_model_init(modeling_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedModel.__init__` (transformers 5.23, `modeling_utils.py`).

    Upstream behaviour: stores the config; builds nothing per layer. Change: before that, a heterogeneous config
    readies per-layer construction of the model's decoder layers (or is refused for an architecture that would
    ignore it); a subclass's `__init__` then builds them. After the whole model is built, a base model whose layers
    have their own windows gets per-layer masks. Removal: upstream calls `prepare_model_init(type(self), config)` at
    the top of `__init__` and `finish_model_init(self)` in `post_init`.
    """
    cls = modeling_utils.PreTrainedModel
    original = cls.__init__
    _check_signature(original, ["self", "config"], "PreTrainedModel.__init__")

    @functools.wraps(original)
    def __init__(self, config, *inputs, **kwargs):
        from .modeling_utils import prepare_model_init

        prepare_model_init(type(self), config)  # hetero-patch: per-layer construction
        original(self, config, *inputs, **kwargs)

    original_post_init = cls.post_init
    _check_signature(original_post_init, ["self"], "PreTrainedModel.post_init")

    @functools.wraps(original_post_init)
    def post_init(self):
        original_post_init(self)
        from .modeling_utils import finish_model_init

        finish_model_init(self)  # hetero-patch: per-layer masks

    cls.__init__ = __init__
    cls.post_init = post_init

    def undo() -> None:
        cls.__init__ = original
        cls.post_init = original_post_init

    return undo


def patch_cache_layer_types(cache_utils: ModuleType) -> Callable[[], None]:
    """`cache_utils.get_layer_types_and_kwargs` (transformers 5.23), read by `DynamicCache` and `StaticCache`.

    Upstream behaviour: a layer's cache type comes from `layer_types` or its window. Change: layers whose attention
    is skipped get the `"dummy"` type, so they allocate no KV and are never asked for the sequence length; a sliding
    layer type whose per-layer window is `None` becomes full attention. Removal: upstream derives both inside
    `get_layer_types_and_kwargs`.
    """
    original = cache_utils.get_layer_types_and_kwargs
    _check_signature(original, ["config"], "cache_utils.get_layer_types_and_kwargs")

    @functools.wraps(original)
    def get_layer_types_and_kwargs(config):
        from .cache_utils import adjust_cache_layer_types

        layer_types, per_layer_kwargs = original(config)
        return adjust_cache_layer_types(config, layer_types, per_layer_kwargs)  # hetero-patch: per-layer types

    cache_utils.get_layer_types_and_kwargs = get_layer_types_and_kwargs

    def undo() -> None:
        cache_utils.get_layer_types_and_kwargs = original

    return undo


def patch_config_post_init(configuration_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedConfig.__post_init__` (transformers 5.23, `configuration_utils.py`), where `per_layer_config` is
    applied, right before the `@strict` class validators run.

    Upstream behaviour: the validators read attributes on the global config. For a heterogeneous config only
    `PreTrainedConfig.validate_architecture` goes layer by layer; the others (LlamaConfig's own check of
    `hidden_size % num_attention_heads`, `validate_token_ids` reading `vocab_size`) fail with
    `AmbiguousGlobalPerLayerAttributeError` when they read an attribute that is per-layer, before any model is built.
    Change: the first heterogeneous instance of a config class makes its validators run on every layer's config
    (`_validate_per_layer`), and their errors name the layer; model classes whose `__init__` reads a per-layer
    attribute for a model-level purpose are readied (`modeling_utils.prepare_config`). Removal: upstream validators
    handle heterogeneous configs as `PreTrainedConfig.validate_architecture` does, and those model classes read
    their config through `prepare_config`'s view.
    """

    cls = configuration_utils.PreTrainedConfig
    original = cls.__post_init__
    _check_signature(original, ["self", "kwargs"], "PreTrainedConfig.__post_init__")

    @functools.wraps(original)
    def __post_init__(self, **kwargs):
        original(self, **kwargs)
        if self.is_heterogeneous:
            _validate_per_layer(type(self))  # hetero-patch: per-layer validation
            from .modeling_utils import prepare_config  # not at patch time: it imports torch

            prepare_config(self)  # hetero-patch: model-level reads of per-layer attributes

    cls.__post_init__ = __post_init__

    def undo() -> None:
        cls.__post_init__ = original

    return undo


def patch_per_layer_config_normalization(heterogeneity_config: ModuleType) -> Callable[[], None]:
    """`integrations.heterogeneity.configuration_utils._apply_heterogeneous_config` (transformers 5.23), which both the
    `per_layer_config` init argument and its setter call.

    Upstream behaviour: the overrides are stored as given (skip names are any strings). Change: the value first goes
    through `configuration_utils.normalize_per_layer_config` (deprecated skip names renamed). Removal: upstream calls
    it at the top of `_apply_heterogeneous_config`.
    """
    original = heterogeneity_config._apply_heterogeneous_config
    _check_signature(original, ["config", "per_layer_config"], "_apply_heterogeneous_config")

    @functools.wraps(original)
    def _apply_heterogeneous_config(config, per_layer_config):
        from .configuration_utils import normalize_per_layer_config

        per_layer_config = normalize_per_layer_config(config, per_layer_config)  # hetero-patch: normalization
        return original(config, per_layer_config)

    heterogeneity_config._apply_heterogeneous_config = _apply_heterogeneous_config

    def undo() -> None:
        heterogeneity_config._apply_heterogeneous_config = original

    return undo


def patch_anymodel_block_configs(configuration_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedConfig.__post_init__` (transformers 5.23, `configuration_utils.py`), before upstream applies
    `per_layer_config`.

    Upstream behaviour: an unknown init argument such as the `block_configs` that NVIDIA Model-Optimizer's AnyModel
    adds to a stock config (`model_type: llama`, `gpt_oss`, ...) becomes a plain attribute; every layer is built at the
    global size and the checkpoint fails to load with size mismatches. Change: for the model types of
    `models/anymodel.py`, `block_configs` is translated into `per_layer_config` first (`anymodel_per_layer_config`);
    any other config is untouched. Removal: upstream configs read AnyModel's `block_configs`, or AnyModel writes
    `per_layer_config`.
    """
    cls = configuration_utils.PreTrainedConfig
    original = cls.__post_init__
    _check_signature(original, ["self", "kwargs"], "PreTrainedConfig.__post_init__")

    @functools.wraps(original)
    def __post_init__(self, **kwargs):
        if "block_configs" in kwargs:  # declared as a field by the checkpoint-family configs, so never theirs
            from .models.anymodel import anymodel_per_layer_config

            kwargs = anymodel_per_layer_config(self, kwargs)  # hetero-patch: AnyModel block_configs
        original(self, **kwargs)

    cls.__post_init__ = __post_init__

    def undo() -> None:
        cls.__post_init__ = original

    return undo


def patch_generate_masks(generation_utils: ModuleType) -> Callable[[], None]:
    """`create_masks_for_generate` as `generation/utils.py` (transformers 5.23) calls it for compileable caches.

    Upstream behaviour: `generate` builds the 4D masks ahead of the forward, one per layer type, from the global
    `sliding_window` / `attention_chunk_size` (which raises for a per-layer value). Change: when layers have their own
    windows, it returns the 2D padding mask and the model builds one mask per distinct setting (`masking_utils.py`),
    as upstream already does for layer types it has no mask function for. Removal: upstream's
    `create_masks_for_generate` defers to the model for per-layer windows.
    """
    original = generation_utils.create_masks_for_generate
    _check_signature(original, ["config", "inputs_embeds", "attention_mask"], "create_masks_for_generate")

    @functools.wraps(original)
    def create_masks_for_generate(config, inputs_embeds, attention_mask, *args, **kwargs):
        from .masking_utils import has_per_layer_masks

        if has_per_layer_masks(config.get_text_config()):
            return attention_mask  # hetero-patch: per-layer masks are built by the layers
        return original(config, inputs_embeds, attention_mask, *args, **kwargs)

    generation_utils.create_masks_for_generate = create_masks_for_generate

    def undo() -> None:
        generation_utils.create_masks_for_generate = original

    return undo


def patch_export_cache_layout(executorch: ModuleType) -> Callable[[], None]:
    """`_get_dynamic_cache_layout` and `_unflatten_dynamic_cache` of `integrations/executorch.py` (transformers 5.23),
    the pytree functions that `register_dynamic_cache_export_support` registers for `DynamicCache`.

    Upstream behaviour: flattening leaves out cache layers without data and unflattening refills layers from index
    0, so a `"dummy"` layer (attention skipped) before a layer holding KV shifts every later layer's keys by one in
    the cache an exported program returns. Change: such layers are marked in the layout and put back in place
    (`cache_utils.export_layout_with_dummy_layers`); caches without them keep upstream's layout. Removal: upstream
    keeps empty layers in place when it flattens a cache.
    """
    original_layout = executorch._get_dynamic_cache_layout
    original_unflatten = executorch._unflatten_dynamic_cache
    _check_signature(original_layout, ["cache"], "integrations.executorch._get_dynamic_cache_layout")
    _check_signature(original_unflatten, ["values", "context"], "integrations.executorch._unflatten_dynamic_cache")

    @functools.wraps(original_layout)
    def _get_dynamic_cache_layout(cache):
        from .cache_utils import export_layout_with_dummy_layers

        return export_layout_with_dummy_layers(cache, original_layout(cache))  # hetero-patch: dummy layers in place

    @functools.wraps(original_unflatten)
    def _unflatten_dynamic_cache(values, context):
        from .cache_utils import unflatten_with_dummy_layers

        return unflatten_with_dummy_layers(values, context, original_unflatten)  # hetero-patch: dummy layers in place

    executorch._get_dynamic_cache_layout = _get_dynamic_cache_layout
    executorch._unflatten_dynamic_cache = _unflatten_dynamic_cache

    def undo() -> None:
        executorch._get_dynamic_cache_layout = original_layout
        executorch._unflatten_dynamic_cache = original_unflatten

    return undo


def patch_decoder_backends(modeling_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedModel.from_pretrained`, `PreTrainedModel._from_config` and `get_model_conversion_mapping`
    (transformers 5.23, `modeling_utils.py`; the latter also as `conversion_mapping.get_model_conversion_mapping`,
    which `core_model_loading.revert_weight_conversion` imports when saving).

    Upstream behaviour: there is no `decoder_backend` argument (an unknown keyword reaches the model's `__init__` and
    raises `TypeError`), and a model's weight transforms come from registries keyed by class name or model type. Change:
    both entry points take `decoder_backend=...` and build the model inside `backends.use_decoder_backend(...)`, the
    run-time choice that is never stored in the config (like `attn_implementation`); a model's transforms also include
    those of its TransformerEngine layers (HF names and shapes <-> TE's), so loading maps each tensor as it streams in
    and `save_pretrained` maps back. Homogeneous stock models get exactly upstream's result (no TE layer, no
    transform). Removal: upstream takes `decoder_backend` like `attn_implementation` and asks the model for
    per-instance weight transforms.
    """
    from .. import conversion_mapping

    cls = modeling_utils.PreTrainedModel
    originals = {name: cls.__dict__[name] for name in ("from_pretrained", "_from_config")}
    for name, original in originals.items():
        if not isinstance(original, classmethod):
            raise _mismatch(f"PreTrainedModel.{name}", "expected a classmethod")

    def with_decoder_backend(function: Callable) -> classmethod:
        @functools.wraps(function)
        def wrapper(klass, *args, decoder_backend=None, **kwargs):
            if decoder_backend is None:
                return function(klass, *args, **kwargs)
            from .backends.selection import use_decoder_backend

            with use_decoder_backend(decoder_backend):  # hetero-patch: the run's decoder backend
                return function(klass, *args, **kwargs)

        return classmethod(wrapper)

    original_mapping = conversion_mapping.get_model_conversion_mapping
    _check_signature(original_mapping, ["model", "key_mapping", "hf_quantizer"], "get_model_conversion_mapping")

    @functools.wraps(original_mapping)
    def get_model_conversion_mapping(model, *args, **kwargs):
        from .backends.transformer_engine_weights import model_weight_conversions

        # hetero-patch: per-instance transforms of the TE layers
        return original_mapping(model, *args, **kwargs) + model_weight_conversions(model)

    for name, original in originals.items():
        setattr(cls, name, with_decoder_backend(original.__func__))
    modeling_utils.get_model_conversion_mapping = get_model_conversion_mapping
    conversion_mapping.get_model_conversion_mapping = get_model_conversion_mapping

    def undo() -> None:
        for name, original in originals.items():
            setattr(cls, name, original)
        modeling_utils.get_model_conversion_mapping = original_mapping
        conversion_mapping.get_model_conversion_mapping = original_mapping

    return undo


def patch_continuous_batching(continuous_api: ModuleType) -> Callable[[], None]:
    """`PagedAttentionCache`, `ContinuousBatchProcessor` and `resolve_continuous_batching_config` as
    `generation/continuous_batching/continuous_api.py` (transformers 5.23) names them, and
    `ContinuousBatchingManager.__init__`.

    Upstream behaviour: the paged cache sizes every page from the global `num_key_value_heads` / `head_dim` and the
    global `sliding_window`; on a heterogeneous config it raises in the generation thread, so `generate_batch` returns
    empty generations and raises nothing (and the config resolution raises on a per-layer `sliding_window`). Change:
    for a heterogeneous config of an architecture this package builds, the cache pages each layer in its own shape
    and window and nothing for layers without KV, planned from the real per-layer sizes (`continuous_batching.py`);
    the config resolution and the batch processor read the model's config through that plan; a model that cannot be
    paged (also for its tensor-parallel size) is refused by layer when the manager is made. Homogeneous and native
    per-layer models get upstream's code. Removal: upstream's `PagedAttentionCache` builds its allocators from
    per-layer page shapes.
    """
    # Imported when called, not here: `continuous_batching.py` imports this very module (through
    # `generation.continuous_batching.cache`), so at this point it may be half-imported itself.
    manager_cls = continuous_api.ContinuousBatchingManager
    original_init = manager_cls.__init__
    _check_signature(original_init, ["self", "model", "generation_config"], "ContinuousBatchingManager.__init__")
    original_cache, processor_cls = continuous_api.PagedAttentionCache, continuous_api.ContinuousBatchProcessor
    original_processor_init = processor_cls.__init__
    original_resolve = continuous_api.resolve_continuous_batching_config
    _check_signature(original_cache.__init__, ["self", "config"], "PagedAttentionCache.__init__")
    _check_signature(original_processor_init, ["self", "cache", "config"], "ContinuousBatchProcessor.__init__")
    _check_signature(original_resolve, ["config", "cb_config"], "resolve_continuous_batching_config")

    @functools.wraps(original_resolve)
    def resolve_continuous_batching_config(config, cb_config, *args, **kwargs):
        from .continuous_batching import serving_inputs

        config, cb_config = serving_inputs(config, cb_config)  # hetero-patch: per-layer plan
        return original_resolve(config, cb_config, *args, **kwargs)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        from .continuous_batching import check_servable

        try:
            original_init(self, *args, **kwargs)
            check_servable(self)  # hetero-patch: refuse in the caller's thread, by layer
        except Exception:
            if getattr(self, "_original_attn_impl", None) is not None:  # switched by the manager: switch back
                self.model.set_attn_implementation(self._original_attn_impl)
            raise

    @functools.wraps(original_cache)
    def PagedAttentionCache(config, *args, **kwargs):  # named as the class it stands in for where upstream calls it
        from .continuous_batching import make_paged_attention_cache

        return make_paged_attention_cache(config, *args, **kwargs)  # hetero-patch: per-layer pages

    @functools.wraps(original_processor_init)
    def processor_init(self, cache, config, *args, **kwargs):
        from .continuous_batching import processor_config

        # hetero-patch: the batch processor reads the per-layer cache's serving config
        original_processor_init(self, cache, processor_config(cache, config), *args, **kwargs)

    manager_cls.__init__ = __init__
    processor_cls.__init__ = processor_init
    continuous_api.resolve_continuous_batching_config = resolve_continuous_batching_config
    continuous_api.PagedAttentionCache = PagedAttentionCache

    def undo() -> None:
        manager_cls.__init__ = original_init
        processor_cls.__init__ = original_processor_init
        continuous_api.resolve_continuous_batching_config = original_resolve
        continuous_api.PagedAttentionCache = original_cache

    return undo


_PER_LAYER_MARKER = "__heterogeneity_per_layer__"


def _validate_per_layer(config_cls: type) -> None:
    """Makes the `@strict` validators of `config_cls` (and of its parents) run on every layer's config of heterogeneous
    configs, once per distinct set of overrides (layers with the same overrides have the same config; the error names
    the first of them). Each layer's config holds every global value too, so no check is lost. Idempotent; undone by
    `deactivate()`."""

    from huggingface_hub.errors import StrictDataclassError

    from .configuration_utils import HeterogeneousConfigError, distinct_layers, validation_layer_config

    def per_layer(validator: Callable) -> Callable:
        if getattr(validator, _PER_LAYER_MARKER, False):
            return validator

        @functools.wraps(validator)
        def validate(self):
            if not self.is_heterogeneous:
                return validator(self)
            for layer_idx in distinct_layers(self):
                try:
                    validator(validation_layer_config(self, layer_idx))
                except (ValueError, TypeError, StrictDataclassError) as error:
                    raise HeterogeneousConfigError(f"Layer {layer_idx}: {error}") from error

        setattr(validate, _PER_LAYER_MARKER, True)
        return validate

    with _lock:
        for klass in config_cls.__mro__:
            validators = klass.__dict__.get("__class_validators__")
            if validators is None or all(getattr(v, _PER_LAYER_MARKER, False) for v in validators):
                continue
            originals = list(validators)
            validators[:] = [per_layer(validator) for validator in originals]
            _undo.append(functools.partial(validators.__setitem__, slice(None), originals))


def _record(undo: Callable[[], None]) -> None:
    with _lock:
        _undo.append(undo)


def _apply(patch: Callable[[ModuleType], Callable[[], None]], module: ModuleType) -> None:
    _record(patch(module))


def _register_checkpoint_formats(configuration_auto: ModuleType) -> None:
    """Registers the configs of the heterogeneous checkpoint families (`nemotron-nas`, `deci`, `gpt_oss_puzzle`,
    `nemotron_h_puzzle`) with `AutoConfig`; their model classes follow when such a config is first made
    (`models/__init__.py`).

    Upstream's `AutoConfig.register` takes the config class itself, which would import it here; instead the families
    are entries of `CONFIG_MAPPING._extra_content` (where `AutoConfig.register` puts them) that import their class on
    first look-up (`models.LazyConfigRegistrations`). `deactivate()` leaves them in place, as it would registrations.
    Upstreaming: entries in `CONFIG_MAPPING_NAMES` and the model mappings.
    """
    from .models import register_configs

    register_configs(configuration_auto.CONFIG_MAPPING)


# (upstream module, what to do once it has been imported completely)
_CALLBACKS = (
    (
        "transformers.integrations.heterogeneity.configuration_utils",
        functools.partial(_apply, patch_per_layer_config_normalization),
    ),
    ("transformers.configuration_utils", functools.partial(_apply, patch_config_post_init)),
    # After the validation patch, so that it wraps it: block_configs become per_layer_config before anything else.
    ("transformers.configuration_utils", functools.partial(_apply, patch_anymodel_block_configs)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_pretrained_model_init)),
    ("transformers.cache_utils", functools.partial(_apply, patch_cache_layer_types)),
    ("transformers.generation.utils", functools.partial(_apply, patch_generate_masks)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_decoder_backends)),
    ("transformers.integrations.executorch", functools.partial(_apply, patch_export_cache_layout)),
    ("transformers.models.auto.configuration_auto", _register_checkpoint_formats),
    (
        "transformers.generation.continuous_batching.continuous_api",
        functools.partial(_apply, patch_continuous_batching),
    ),
)


def activate() -> None:
    """Applies every patch once, each as soon as the module it patches is imported. Thread-safe and idempotent."""
    global _active
    with _lock:
        if _active:
            return
        _active = True
    # Outside the lock: a callback may import upstream modules, and another thread holding one of their import locks
    # may be waiting for this lock in its own callbacks.
    for module_name, callback in _CALLBACKS:
        after_import(module_name, callback)


def deactivate() -> None:
    """Restores upstream's functions and the layer classes wrapped for per-layer construction. Models already built
    keep their per-layer structure."""
    global _active
    with _lock:
        for _, callback in _CALLBACKS:
            forget(callback)
        while _undo:
            _undo.pop()()
        if "transformers.heterogeneity.modeling_utils" in sys.modules:
            sys.modules["transformers.heterogeneity.modeling_utils"].unwrap_classes()
        _active = False


def is_active() -> bool:
    return _active
