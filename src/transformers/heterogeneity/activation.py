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
    """`PreTrainedModel.__init__` and `PreTrainedModel.post_init` (transformers 5.23, `modeling_utils.py`).

    Upstream behaviour: `__init__` stores the config and builds nothing per layer; `post_init` gathers the model's
    static properties. Change: `__init__` first calls `model_init_started(self, config)` (the model is under
    construction, and a heterogeneous config readies per-layer construction of its decoder layers, or is refused for
    an architecture that would ignore it); `post_init` last calls `model_init_finished(self)` (the model leaves
    construction; decoder backend and per-layer masks). Removal: upstream makes these two calls.
    """
    cls = modeling_utils.PreTrainedModel
    original = cls.__init__
    _check_signature(original, ["self", "config"], "PreTrainedModel.__init__")

    @functools.wraps(original)
    def __init__(self, config, *inputs, **kwargs):
        from .modeling_utils import model_init_started

        model_init_started(self, config)  # hetero-patch: per-layer construction
        original(self, config, *inputs, **kwargs)

    original_post_init = cls.post_init
    _check_signature(original_post_init, ["self"], "PreTrainedModel.post_init")

    @functools.wraps(original_post_init)
    def post_init(self):
        original_post_init(self)
        from .modeling_utils import model_init_finished

        model_init_finished(self)  # hetero-patch: backend and per-layer masks

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
    (`_validate_per_layer`, through `configuration_utils.validate_on_every_layer`), and their errors name the layer.
    Removal: upstream's `PreTrainedConfig.__init_subclass__` makes every class validator run through
    `validate_on_every_layer`, and `__post_init__` runs them for a heterogeneous config (the upstream series).

    Also, overlay only: the architecture's classes are readied as soon as its modeling module is imported
    (`_ready_architecture_classes`): a layer built on its own is built per layer, and the model classes whose own
    `__init__` reads a per-layer attribute (GPT-OSS's causal-LM head) read it through `model_init_config`
    (`patch_model_init_reads`). Inside Transformers, the modeling file makes that call itself, and layers are readied
    when the first heterogeneous model of their architecture is built.
    """

    cls = configuration_utils.PreTrainedConfig
    original = cls.__post_init__
    _check_signature(original, ["self", "kwargs"], "PreTrainedConfig.__post_init__")

    @functools.wraps(original)
    def __post_init__(self, **kwargs):
        original(self, **kwargs)
        if self.is_heterogeneous:
            _validate_per_layer(type(self))
            _ready_architecture_classes(self.model_type)

    cls.__post_init__ = __post_init__

    def undo() -> None:
        cls.__post_init__ = original

    return undo


_watched_architectures: dict[str, Callable] = {}


def _ready_architecture_classes(model_type: str) -> None:
    """Wraps the classes of `model_type`'s registry row (`modeling_utils.wrap_architecture_classes`) once its modeling
    module has been imported, without importing it (a config may be made in a process that never builds a model)."""
    from .supported_models import SUPPORTED_ARCHITECTURES

    architecture = SUPPORTED_ARCHITECTURES.get(model_type)
    if architecture is None:
        return
    with _lock:
        if model_type in _watched_architectures:
            return
        callback = functools.partial(_wrap_architecture_classes, model_type)
        _watched_architectures[model_type] = callback
    after_import(architecture.modeling_module, callback)


def _wrap_architecture_classes(model_type: str, module: ModuleType) -> None:
    from .modeling_utils import wrap_architecture_classes
    from .supported_models import SUPPORTED_ARCHITECTURES

    wrap_architecture_classes(model_type)
    for class_name in SUPPORTED_ARCHITECTURES[model_type].model_init_reads:
        model_cls = getattr(module, class_name)
        with _lock:
            if getattr(model_cls.__init__, _PATCHED_MARKER, False):
                continue
            _record(patch_model_init_reads(model_cls))


_PATCHED_MARKER = "__heterogeneity_patched__"


def patch_model_init_reads(model_cls: type) -> Callable[[], None]:
    """`__init__` of a model class that reads per-layer attributes for a model-level feature
    (`ArchitectureSpec.model_init_reads`: `GptOssForCausalLM` in `models/gpt_oss/modeling_gpt_oss.py`, transformers
    5.23, keeps `num_local_experts` and `num_experts_per_tok` for its load-balancing loss).

    Upstream behaviour: the head reads them on the model's config, which for per-layer expert counts raises
    `AmbiguousGlobalPerLayerAttributeError`: the model cannot be built. Change: the class is built with
    `modeling_utils.model_init_config(type(self), config)`, which reads them as their global value (the loss is
    refused while they differ between layers, by `model_init_finished`); homogeneous configs are passed as they are.
    Removal: the modeling file makes that call first in its `__init__` (the upstream series does).
    """
    original = model_cls.__dict__["__init__"]
    _check_signature(original, ["self", "config"], f"{model_cls.__name__}.__init__")

    @functools.wraps(original)
    def __init__(self, config, *args, **kwargs):
        from .modeling_utils import model_init_config

        original(self, model_init_config(type(self), config), *args, **kwargs)  # hetero-patch: model-level reads

    setattr(__init__, _PATCHED_MARKER, True)
    model_cls.__init__ = __init__

    def undo() -> None:
        model_cls.__init__ = original

    return undo


def patch_per_layer_config_normalization(heterogeneity_config: ModuleType) -> Callable[[], None]:
    """`integrations.heterogeneity.configuration_utils._apply_heterogeneous_config` (transformers 5.23), which both the
    `per_layer_config` init argument and its setter call.

    Upstream behaviour: the overrides are stored as given (skip names are any strings). Change: the value first goes
    through `configuration_validation.normalize_per_layer_config` (checked; deprecated skip names renamed). Removal: upstream calls
    it at the top of `_apply_heterogeneous_config`.
    """
    original = heterogeneity_config._apply_heterogeneous_config
    _check_signature(original, ["config", "per_layer_config"], "_apply_heterogeneous_config")

    @functools.wraps(original)
    def _apply_heterogeneous_config(config, per_layer_config):
        from .configuration_validation import normalize_per_layer_config

        per_layer_config = normalize_per_layer_config(config, per_layer_config)  # hetero-patch: normalization
        return original(config, per_layer_config)

    heterogeneity_config._apply_heterogeneous_config = _apply_heterogeneous_config

    def undo() -> None:
        heterogeneity_config._apply_heterogeneous_config = original

    return undo


def patch_config_file_duplicate_keys(configuration_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedConfig._dict_from_json_file` (transformers 5.23, `configuration_utils.py`), which reads `config.json`
    for `from_pretrained` and `from_json_file`.

    Upstream behaviour: `json.loads` keeps the last of two equal keys, so a `per_layer_config` giving layer `"1"` twice
    (or a `block_configs` entry giving a field twice) silently loses one. Change: a file with `per_layer_config` or
    `block_configs` is refused when a key repeats inside them (`configuration_validation.check_duplicate_keys`); the
    dict returned is upstream's, and files without those keys are not read again. Removal: upstream reads config files
    with a duplicate-refusing `object_pairs_hook`.
    """
    cls = configuration_utils.PreTrainedConfig
    original = cls.__dict__["_dict_from_json_file"]
    if not isinstance(original, classmethod):
        raise _mismatch("PreTrainedConfig._dict_from_json_file", "expected a classmethod")
    _check_signature(original.__func__, ["cls", "json_file"], "PreTrainedConfig._dict_from_json_file")

    @functools.wraps(original.__func__)
    def _dict_from_json_file(klass, json_file):
        config_dict = original.__func__(klass, json_file)
        from .configuration_validation import check_duplicate_keys

        check_duplicate_keys(json_file, config_dict)  # hetero-patch: duplicate per-layer keys
        return config_dict

    cls._dict_from_json_file = classmethod(_dict_from_json_file)

    def undo() -> None:
        cls._dict_from_json_file = original

    return undo


def patch_anymodel_block_configs(configuration_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedConfig.__post_init__` (transformers 5.23, `configuration_utils.py`), before upstream applies
    `per_layer_config`.

    Upstream behaviour: an unknown init argument such as the `block_configs` that NVIDIA Model-Optimizer's AnyModel
    adds to a stock config (`model_type: llama`, `gpt_oss`, ...) becomes a plain attribute; every layer is built at the
    global size and the checkpoint fails to load with size mismatches. Change: for the model types of
    `checkpoint_formats/anymodel.py`, `block_configs` is translated into `per_layer_config` first (`anymodel_per_layer_config`);
    any other config is untouched. Removal: upstream configs read AnyModel's `block_configs`, or AnyModel writes
    `per_layer_config`.
    """
    cls = configuration_utils.PreTrainedConfig
    original = cls.__post_init__
    _check_signature(original, ["self", "kwargs"], "PreTrainedConfig.__post_init__")

    @functools.wraps(original)
    def __post_init__(self, **kwargs):
        if "block_configs" in kwargs:  # declared as a field by the checkpoint-family configs, so never theirs
            from .checkpoint_formats.anymodel import anymodel_per_layer_config

            kwargs = anymodel_per_layer_config(self, kwargs)  # hetero-patch: AnyModel block_configs
        original(self, **kwargs)

    cls.__post_init__ = __post_init__

    def undo() -> None:
        cls.__post_init__ = original

    return undo


def patch_dequantized_save(modeling_utils: ModuleType) -> Callable[[], None]:
    """`core_model_loading.revert_weight_conversion` (transformers 5.23), also as `modeling_utils` imported it, which
    `save_pretrained` calls to write weights in the layout they were loaded from.

    Upstream behaviour: a conversion that dequantized weights on load (MXFP4 `*_blocks` + `*_scales` -> the parameter)
    reverts with an identity operation, but to its source names, so the float experts were saved as
    `experts.gate_up_proj_blocks` without `quantization_config` and a reload missed them. Change: for models of a
    heterogeneous config (or of a checkpoint family this package defines), which load MXFP4 experts dequantized
    whenever layers have their own expert counts, such conversions are dropped first
    (`core_model_loading.drop_dequantizing_conversions`): the float parameters are saved under their own names.
    Homogeneous models keep upstream's behaviour. Removal: upstream's `revert_weight_conversion` skips conversions
    whose reverse is the identity (the generic fix of the upstream series).
    """
    core_model_loading = sys.modules["transformers.core_model_loading"]  # imported by modeling_utils
    original = core_model_loading.revert_weight_conversion
    _check_signature(original, ["model", "state_dict"], "core_model_loading.revert_weight_conversion")

    @functools.wraps(original)
    def revert_weight_conversion(model, state_dict, *args, **kwargs):
        config = getattr(model, "config", None)
        if getattr(config, "is_heterogeneous", False) or type(config).__module__.startswith(__package__):
            from .core_model_loading import drop_dequantizing_conversions

            drop_dequantizing_conversions(model)  # hetero-patch: dequantized weights saved under their own names
        return original(model, state_dict, *args, **kwargs)

    core_model_loading.revert_weight_conversion = revert_weight_conversion
    modeling_utils.revert_weight_conversion = revert_weight_conversion

    def undo() -> None:
        core_model_loading.revert_weight_conversion = original
        modeling_utils.revert_weight_conversion = original

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
    """`PreTrainedModel.from_pretrained`, `PreTrainedModel._from_config`, `PreTrainedModel._initialize_missing_keys` and
    `get_model_conversion_mapping`
    (transformers 5.23, `modeling_utils.py`; the latter also as `conversion_mapping.get_model_conversion_mapping`,
    which `core_model_loading.revert_weight_conversion` imports when saving).

    Upstream behaviour: there is no `decoder_backend` argument (an unknown keyword reaches the model's `__init__` and
    raises `TypeError`), and a model's weight transforms come from registries keyed by class name or model type. Change:
    both entry points take `decoder_backend=...` and build the model inside `backends.use_decoder_backend(...)`, the
    run-time choice that is never stored in the config (like `attn_implementation`); a model's transforms also include
    those of its TransformerEngine layers (HF names and shapes <-> TE's), so loading maps each tensor as it streams in
    and `save_pretrained` maps back; `_initialize_missing_keys` also initialises the TE parameters a checkpoint lacks
    (upstream's `_init_weights` cannot: it skips TE modules). Homogeneous stock models get exactly upstream's result
    (no TE layer, no transform). Removal: upstream takes `decoder_backend` like `attn_implementation` and asks the
    model for per-instance weight transforms and initialisation.
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
        from .backends.modeling import model_weight_conversions

        # hetero-patch: per-instance transforms of the TE layers
        return original_mapping(model, *args, **kwargs) + model_weight_conversions(model)

    original_initialize = cls._initialize_missing_keys
    _check_signature(original_initialize, ["self", "is_quantized"], "PreTrainedModel._initialize_missing_keys")

    @functools.wraps(original_initialize)
    def _initialize_missing_keys(self, is_quantized):
        original_initialize(self, is_quantized)
        from .backends.modeling import initialize_missing_parameters

        initialize_missing_parameters(self)  # hetero-patch: TE parameters the checkpoint lacks

    for name, original in originals.items():
        setattr(cls, name, with_decoder_backend(original.__func__))
    cls._initialize_missing_keys = _initialize_missing_keys
    modeling_utils.get_model_conversion_mapping = get_model_conversion_mapping
    conversion_mapping.get_model_conversion_mapping = get_model_conversion_mapping

    def undo() -> None:
        for name, original in originals.items():
            setattr(cls, name, original)
        cls._initialize_missing_keys = original_initialize
        modeling_utils.get_model_conversion_mapping = original_mapping
        conversion_mapping.get_model_conversion_mapping = original_mapping

    return undo


def patch_parent_loading(modeling_utils: ModuleType) -> Callable[[], None]:
    """`PreTrainedModel._finalize_model_loading` (transformers 5.23, `modeling_utils.py`), the static method that
    `from_pretrained` calls with the load's report (`LoadStateDictInfo`) before logging it.

    Upstream behaviour: a checkpoint tensor whose shape differs from the model's ends the load with a `RuntimeError`
    that suggests `ignore_mismatched_sizes=True`, and the tensors of sub-blocks the config skips are reported as
    UNEXPECTED. Change: for a heterogeneous config, mismatches raise `ParentShapeMismatchError` naming layer, tensor
    and both shapes and pointing to `derive` (with `ignore_mismatched_sizes=True`, upstream's random initialisation
    stays and a warning points to `derive`), and tensors removed by a skip are reported as dropped by that skip
    (`derivation/loading.py`). Homogeneous configs get upstream's behaviour. Removal: upstream asks the model for its
    intentionally removed tensors and gives per-layer mismatch messages.
    """
    cls = modeling_utils.PreTrainedModel
    original = cls.__dict__["_finalize_model_loading"]
    if not isinstance(original, staticmethod):
        raise _mismatch("PreTrainedModel._finalize_model_loading", "expected a staticmethod")
    function = original.__func__
    _check_signature(function, ["model", "load_config", "loading_info"], "PreTrainedModel._finalize_model_loading")

    @functools.wraps(function)
    def _finalize_model_loading(model, load_config, loading_info):
        from .derivation.loading import check_loaded_tensors

        # hetero-patch: per-layer mismatch errors and tensors dropped by skips
        check_loaded_tensors(model, load_config.ignore_mismatched_sizes, loading_info)
        return function(model, load_config, loading_info)

    cls._finalize_model_loading = staticmethod(_finalize_model_loading)

    def undo() -> None:
        cls._finalize_model_loading = original

    return undo


def patch_continuous_batching(continuous_api: ModuleType) -> Callable[[], None]:
    """`PagedAttentionCache`, `ContinuousBatchingIOs`, `ContinuousBatchProcessor` and
    `resolve_continuous_batching_config` as `generation/continuous_batching/continuous_api.py` (transformers 5.23) names
    them, `ContinuousBatchingIOs` as `input_outputs.py` names it (for its async IO pairs), and
    `ContinuousBatchingManager.__init__`.

    Upstream behaviour: the paged cache sizes every page from the global `num_key_value_heads` / `head_dim` and pages
    at most two groups, full attention and one global `sliding_window`, and the batch IO tensors hold key lengths and
    masks for those two; on a heterogeneous config it raises in the generation thread, so `generate_batch` returns
    empty generations and raises nothing (and the config resolution raises on a per-layer `sliding_window`). Change:
    for a heterogeneous config of an architecture this package builds, the cache pages each layer in its own shape,
    one group per distinct window, and nothing for layers without KV, planned from the real per-layer sizes
    (`continuous_batching.py`); the IO tensors hold every group's key lengths and masks; the config resolution and the
    batch processor read the model's config through that plan; a model that cannot be paged (also for its
    tensor-parallel size) is refused by layer when the manager is made. Homogeneous and native per-layer models get
    upstream's code. Removal: upstream's `PagedAttentionCache` builds its allocators from per-layer page shapes and
    windows, and its IO tensors hold one row per page group.
    """
    # `continuous_batching.py` is imported when called, not here: it imports this very module (through
    # `generation.continuous_batching.cache`), so at this point it may be half-imported itself. `input_outputs` is
    # complete: `continuous_api` imports it.
    from ..generation.continuous_batching import input_outputs

    manager_cls = continuous_api.ContinuousBatchingManager
    original_init = manager_cls.__init__
    _check_signature(original_init, ["self", "model", "generation_config"], "ContinuousBatchingManager.__init__")
    original_cache, processor_cls = continuous_api.PagedAttentionCache, continuous_api.ContinuousBatchProcessor
    original_io = continuous_api.ContinuousBatchingIOs
    if input_outputs.ContinuousBatchingIOs is not original_io:
        raise _mismatch("input_outputs.ContinuousBatchingIOs", "expected the class `continuous_api` imports")
    original_processor_init = processor_cls.__init__
    original_resolve = continuous_api.resolve_continuous_batching_config
    _check_signature(original_cache.__init__, ["self", "config"], "PagedAttentionCache.__init__")
    _check_signature(original_io.__init__, ["self", "cache", "config"], "ContinuousBatchingIOs.__init__")
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

    @functools.wraps(original_io)
    def ContinuousBatchingIOs(**kwargs):  # named as the class it stands in for where upstream calls it
        from .continuous_batching import batch_io

        return batch_io(original_io, **kwargs)  # hetero-patch: key lengths and masks of every page group

    @functools.wraps(original_processor_init)
    def processor_init(self, cache, config, *args, **kwargs):
        from .continuous_batching import processor_config

        # hetero-patch: the batch processor reads the per-layer cache's serving config
        original_processor_init(self, cache, processor_config(cache, config), *args, **kwargs)

    manager_cls.__init__ = __init__
    processor_cls.__init__ = processor_init
    continuous_api.resolve_continuous_batching_config = resolve_continuous_batching_config
    continuous_api.PagedAttentionCache = PagedAttentionCache
    continuous_api.ContinuousBatchingIOs = ContinuousBatchingIOs
    input_outputs.ContinuousBatchingIOs = ContinuousBatchingIOs

    def undo() -> None:
        manager_cls.__init__ = original_init
        processor_cls.__init__ = original_processor_init
        continuous_api.resolve_continuous_batching_config = original_resolve
        continuous_api.PagedAttentionCache = original_cache
        continuous_api.ContinuousBatchingIOs = original_io
        input_outputs.ContinuousBatchingIOs = original_io

    return undo


class _AllocatorsByGroup(dict):
    """Upstream's `ATTN_TYPE_TO_ALLOCATOR` (its classes, as readers of `supports_block_table` expect), looked up through
    `continuous_batching.page_group_allocator`: while a per-layer cache runs upstream's `__init__`, a page group's name
    gives the constructor of that group's per-layer allocator; otherwise upstream's class."""

    def __getitem__(self, attn_type: str) -> Callable:
        from .continuous_batching import page_group_allocator

        return page_group_allocator(attn_type, self.get(attn_type))  # hetero-patch: per-layer allocators


def patch_paged_cache_groups(continuous_api: ModuleType) -> Callable[[], None]:
    """`group_layers_by_attn_type`, `ATTN_TYPE_TO_ALLOCATOR` and `PagedAttentionMemoryHandler` as
    `generation/continuous_batching/cache.py` (transformers 5.23) names them in `PagedAttentionCache.__init__`.

    Upstream behaviour: `PagedAttentionCache.__init__` groups layers by `config.layer_types` (or the global
    `sliding_window`), builds one allocator per group from the global KV heads and head_dim, and plans memory with a
    whole-model block of `num_hidden_layers` equal pages and at most two attention masks. Change: while
    `HeterogeneousPagedAttentionCache` runs upstream's `__init__` on a `continuous_batching.ServingConfig` (the
    per-layer view of the model's config), the groups are the plan's page groups, each built by a per-layer allocator,
    and memory is planned with the real whole-model block and one mask per group; everything else gets upstream's
    functions and classes. Applied once `continuous_api` is imported, so that `initialization.py` keeps upstream's
    dict object. Removal: upstream's `PagedAttentionCache.__init__` takes its groups, allocators and block size from a
    per-layer page plan.
    """
    from ..generation.continuous_batching import cache  # complete: `continuous_api` imports it

    original_groups = cache.group_layers_by_attn_type
    original_allocators = cache.ATTN_TYPE_TO_ALLOCATOR
    original_handler = cache.PagedAttentionMemoryHandler
    _check_signature(original_groups, ["config"], "cache.group_layers_by_attn_type")
    _check_signature(
        original_handler.__init__, ["self", "config", "cb_config", "dtype"], "PagedAttentionMemoryHandler"
    )
    if not isinstance(original_allocators, dict):
        raise _mismatch("cache.ATTN_TYPE_TO_ALLOCATOR", "expected a dict of allocator classes")

    @functools.wraps(original_groups)
    def group_layers_by_attn_type(config):
        from .continuous_batching import page_groups

        return page_groups(config, original_groups)  # hetero-patch: the plan's page groups

    @functools.wraps(original_handler)
    def PagedAttentionMemoryHandler(**kwargs):  # named as the class it stands in for where upstream calls it
        from .continuous_batching import memory_handler

        return memory_handler(original_handler, **kwargs)  # hetero-patch: real whole-model block, masks per group

    cache.group_layers_by_attn_type = group_layers_by_attn_type
    cache.ATTN_TYPE_TO_ALLOCATOR = _AllocatorsByGroup(original_allocators)
    cache.PagedAttentionMemoryHandler = PagedAttentionMemoryHandler

    def undo() -> None:
        cache.group_layers_by_attn_type = original_groups
        cache.ATTN_TYPE_TO_ALLOCATOR = original_allocators
        cache.PagedAttentionMemoryHandler = original_handler

    return undo


class _TransformersForModelManager:
    """The `transformers` module as the model manager reads it (`getattr(transformers, config.architectures[0])`):
    upstream's attributes, and the model classes of the checkpoint families resolved to their Auto class."""

    def __init__(self, transformers: ModuleType) -> None:
        self._transformers = transformers

    def __getattr__(self, name: str):
        from .serving import architecture_class

        return architecture_class(name, self._transformers)  # hetero-patch: family architectures


# Where a patched `ModelManager` keeps its `serving.ServingState`.
_SERVING_STATE = "_heterogeneity_serving_state"


def patch_serving_model_manager(model_manager: ModuleType) -> Callable[[], None]:
    """`ModelManager.__init__`, `ModelManager.load_model_and_processor` and the `transformers` module as
    `cli/serving/model_manager.py` (transformers 5.23, `transformers serve`) names them.

    Upstream behaviour: a checkpoint's class is `getattr(transformers, config.architectures[0])`, an `AttributeError`
    (HTTP 500) for the checkpoint families registered with the Auto classes (`DeciLMForCausalLM`, ...); with
    `--continuous-batching`, a model continuous batching cannot page loads and then fails every request. Change: those
    architecture names resolve to the Auto class that builds the family's model (`serving.architecture_class`); a
    per-layer model continuous batching cannot page is refused when it is loaded, with the reason logged: a model
    preloaded at start-up (`transformers serve MODEL`) stops the server with that message (exit status 1), one named
    by a request is unloaded and that request, and every later one naming it, gets the reason (HTTP 422, through
    `patch_serving_requests`). Other models load as upstream. Removal: upstream's model manager resolves
    architectures through the Auto classes and checks continuous-batching support when it loads a model.
    """
    cls = model_manager.ModelManager
    original_init, original_load = cls.__init__, cls.load_model_and_processor
    original_transformers = model_manager.transformers
    _check_signature(original_init, ["self", "device", "dtype"], "ModelManager.__init__")
    _check_signature(original_load, ["self", "model_id_and_revision"], "ModelManager.load_model_and_processor")
    init_signature, load_signature = inspect.signature(original_init), inspect.signature(original_load)
    for signature, name in ((init_signature, "continuous_batching"), (load_signature, "gguf_file")):
        if name not in signature.parameters:
            raise _mismatch("ModelManager", f"expected a `{name}` argument")

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        from .serving import ServingState, UnservableModelError

        arguments = init_signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        # hetero-patch: what the loading wrapper needs to know of the server's options
        setattr(self, _SERVING_STATE, ServingState(arguments.arguments["continuous_batching"]))
        try:
            original_init(self, *args, **kwargs)
        except UnservableModelError as error:  # the preloaded model: the server does not start
            raise SystemExit(f"transformers serve: {error}") from error

    @functools.wraps(original_load)
    def load_model_and_processor(self, model_id_and_revision, *args, **kwargs):
        arguments = load_signature.bind(self, model_id_and_revision, *args, **kwargs)
        gguf_file = arguments.arguments.get("gguf_file")
        model_key = model_id_and_revision if gguf_file is None else f"{model_id_and_revision}:{gguf_file}"
        state = getattr(self, _SERVING_STATE, None)  # `None`: made before the activation, so its options are unknown
        if state is None:
            return original_load(self, model_id_and_revision, *args, **kwargs)
        state.check_not_refused(model_key)
        model, processor = original_load(self, model_id_and_revision, *args, **kwargs)

        def unload() -> None:
            for timed_model in list(self.loaded_models.values()):
                if timed_model.model is model:
                    timed_model.delete_model()

        state.refuse_if_unservable(model_key, model, unload)  # hetero-patch: refused when loaded
        return model, processor

    cls.__init__ = __init__
    cls.load_model_and_processor = load_model_and_processor
    model_manager.transformers = _TransformersForModelManager(original_transformers)

    def undo() -> None:
        cls.__init__ = original_init
        cls.load_model_and_processor = original_load
        model_manager.transformers = original_transformers

    return undo


def patch_serving_requests(serving_utils: ModuleType) -> Callable[[], None]:
    """`BaseHandler._resolve_model` and the `generate_streaming` / `generate_non_streaming` methods of
    `GenerateManager` and `CBGenerateManager`, in `cli/serving/utils.py` (transformers 5.23).

    Upstream behaviour: a malformed field (`max_tokens: "lots"`) raises in the handler (HTTP 500); an empty prompt
    kills the continuous-batching worker (every later request gets 503) or fails `generate` (500); `max_tokens` is
    taken as given, so `max_tokens: 1000000000` holds the model's inference thread until the client gives up, or
    grows past the paged cache and kills the worker. Change: for the models this package builds per layer
    (`serving.applies_to`), malformed fields get a 400 naming the field (`serving.check_request_fields`), an empty
    prompt or one the model cannot take gets a 400, and `max_tokens` is lowered to what the model's context and the
    paged cache hold, which the response says in a header (`serving.cap_generation`); a model the model manager
    refused gets its reason with HTTP 422. Other models are served as upstream. Removal: upstream's handlers validate
    their fields and prompt and bound `max_tokens`.
    """
    base_handler = serving_utils.BaseHandler
    original_resolve = base_handler._resolve_model
    _check_signature(original_resolve, ["self", "body"], "BaseHandler._resolve_model")
    generation_methods = {
        (manager_cls, name): getattr(manager_cls, name)
        for manager_cls in (serving_utils.GenerateManager, serving_utils.CBGenerateManager)
        for name in ("generate_streaming", "generate_non_streaming")
    }
    for (manager_cls, name), method in generation_methods.items():
        _check_signature(
            method, ["self", "model", "processor", "inputs", "gen_config"], f"{manager_cls.__name__}.{name}"
        )

    @functools.wraps(original_resolve)
    def _resolve_model(self, body):
        from .serving import (
            UNSERVABLE_MODEL,
            ServingRequestError,
            UnservableModelError,
            applies_to,
            check_request_fields,
        )

        try:
            model_id, model, processor = original_resolve(self, body)
        except UnservableModelError as error:
            raise ServingRequestError(UNSERVABLE_MODEL, str(error), param="model") from error
        if applies_to(model.config):
            check_request_fields(body)  # hetero-patch: 400 naming a malformed field
        return model_id, model, processor

    def checked(method: Callable, continuous_batching: bool) -> Callable:
        def prepare(manager, model, inputs, gen_config) -> None:
            from .serving import applies_to, cap_generation, continuous_batching_cache

            if applies_to(model.config):
                cache = continuous_batching_cache(manager._cb) if continuous_batching else None
                cap_generation(model.config, inputs["input_ids"], gen_config, cache)  # hetero-patch: prompt, cap

        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def generate(self, model, processor, inputs, gen_config, *args, **kwargs):
                prepare(self, model, inputs, gen_config)
                return await method(self, model, processor, inputs, gen_config, *args, **kwargs)

        else:

            @functools.wraps(method)
            def generate(self, model, processor, inputs, gen_config, *args, **kwargs):
                prepare(self, model, inputs, gen_config)
                return method(self, model, processor, inputs, gen_config, *args, **kwargs)

        return generate

    base_handler._resolve_model = _resolve_model
    for (manager_cls, name), method in generation_methods.items():
        setattr(manager_cls, name, checked(method, manager_cls is serving_utils.CBGenerateManager))

    def undo() -> None:
        base_handler._resolve_model = original_resolve
        for (manager_cls, name), method in generation_methods.items():
            setattr(manager_cls, name, method)

    return undo


def patch_serving_app(server: ModuleType) -> Callable[[], None]:
    """`build_server` of `cli/serving/server.py` (transformers 5.23), which makes the FastAPI app.

    Upstream behaviour: a response carries what the handler built; an exception it has no handler for is a 500.
    Change: the app answers `serving.ServingRequestError` (raised by the fixes of `patch_serving_requests`) with its
    status and an OpenAI-style error body, and `serving.ResponseNotesMiddleware` adds to a response the headers
    `serving.cap_generation` recorded for its request (only requests to the models this package builds per layer
    raise or record any). Removal: upstream's handlers answer client errors and say in their responses that
    `max_tokens` was lowered.
    """
    original_build = server.build_server
    _check_signature(original_build, ["model_manager", "chat_handler"], "build_server")

    @functools.wraps(original_build)
    def build_server(*args, **kwargs):
        from .serving import ResponseNotesMiddleware, ServingRequestError, serving_request_error_response

        app = original_build(*args, **kwargs)
        app.add_exception_handler(ServingRequestError, serving_request_error_response)  # hetero-patch: 4xx
        app.add_middleware(ResponseNotesMiddleware)  # hetero-patch: what the server changed in a request
        return app

    server.build_server = build_server

    def undo() -> None:
        server.build_server = original_build

    return undo


_PER_LAYER_MARKER = "__heterogeneity_per_layer__"


def _validate_per_layer(config_cls: type) -> None:
    """Makes the `@strict` validators of `config_cls` (and of its parents) run through
    `configuration_utils.validate_on_every_layer`, and `validate` raise a layer's `HeterogeneousConfigError` as such
    (upstream's `@strict` would wrap it into a `StrictDataclassClassValidationError`, which is no `ValueError`).
    Idempotent; undone by `deactivate()`."""

    from huggingface_hub.errors import StrictDataclassClassValidationError

    from .configuration_utils import HeterogeneousConfigError

    def per_layer(validator: Callable) -> Callable:
        if getattr(validator, _PER_LAYER_MARKER, False):
            return validator

        @functools.wraps(validator)
        def validate(self):
            from .configuration_utils import validate_on_every_layer

            validate_on_every_layer(self, validator)  # hetero-patch: per-layer validation

        setattr(validate, _PER_LAYER_MARKER, True)
        return validate

    def unwrapping(validate: Callable) -> Callable:
        @functools.wraps(validate)  # keeps `__is_defined_by_strict_decorator__`, which `@strict` on subclasses checks
        def validate_raising_per_layer_errors(self):
            try:
                validate(self)
            except StrictDataclassClassValidationError as error:
                if isinstance(error.__cause__, HeterogeneousConfigError):
                    raise HeterogeneousConfigError(str(error.__cause__)) from error.__cause__
                raise

        setattr(validate_raising_per_layer_errors, _PER_LAYER_MARKER, True)
        return validate_raising_per_layer_errors

    with _lock:
        for klass in config_cls.__mro__:
            validators = klass.__dict__.get("__class_validators__")
            if validators is None or all(getattr(v, _PER_LAYER_MARKER, False) for v in validators):
                continue
            originals = list(validators)
            validators[:] = [per_layer(validator) for validator in originals]
            _undo.append(functools.partial(validators.__setitem__, slice(None), originals))
        for klass in config_cls.__mro__:
            validate = klass.__dict__.get("validate")
            if validate is not None and not getattr(validate, _PER_LAYER_MARKER, False):
                klass.validate = unwrapping(validate)
                _undo.append(functools.partial(setattr, klass, "validate", validate))


def _record(undo: Callable[[], None]) -> None:
    with _lock:
        _undo.append(undo)


def _apply(patch: Callable[[ModuleType], Callable[[], None]], module: ModuleType) -> None:
    _record(patch(module))


def _register_checkpoint_formats(configuration_auto: ModuleType) -> None:
    """Registers the configs of the heterogeneous checkpoint families (`nemotron-nas`, `deci`, `gpt_oss_puzzle`,
    `nemotron_h_puzzle`) with `AutoConfig`; their model classes follow when such a config is first made
    (`checkpoint_formats/__init__.py`).

    Upstream's `AutoConfig.register` takes the config class itself, which would import it here; instead the families
    are entries of `CONFIG_MAPPING._extra_content` (where `AutoConfig.register` puts them) that import their class on
    first look-up (`checkpoint_formats.LazyConfigRegistrations`). `deactivate()` leaves them in place, as it would registrations.
    Upstreaming: entries in `CONFIG_MAPPING_NAMES` and the model mappings.
    """
    from .checkpoint_formats import register_configs

    register_configs(configuration_auto.CONFIG_MAPPING)


# (upstream module, what to do once it has been imported completely)
_CALLBACKS = (
    (
        "transformers.integrations.heterogeneity.configuration_utils",
        functools.partial(_apply, patch_per_layer_config_normalization),
    ),
    ("transformers.configuration_utils", functools.partial(_apply, patch_config_post_init)),
    ("transformers.configuration_utils", functools.partial(_apply, patch_config_file_duplicate_keys)),
    # After the validation patch, so that it wraps it: block_configs become per_layer_config before anything else.
    ("transformers.configuration_utils", functools.partial(_apply, patch_anymodel_block_configs)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_pretrained_model_init)),
    ("transformers.cache_utils", functools.partial(_apply, patch_cache_layer_types)),
    ("transformers.generation.utils", functools.partial(_apply, patch_generate_masks)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_decoder_backends)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_parent_loading)),
    ("transformers.modeling_utils", functools.partial(_apply, patch_dequantized_save)),
    ("transformers.integrations.executorch", functools.partial(_apply, patch_export_cache_layout)),
    ("transformers.models.auto.configuration_auto", _register_checkpoint_formats),
    (
        "transformers.generation.continuous_batching.continuous_api",
        functools.partial(_apply, patch_continuous_batching),
    ),
    (
        "transformers.generation.continuous_batching.continuous_api",
        functools.partial(_apply, patch_paged_cache_groups),
    ),
    ("transformers.cli.serving.model_manager", functools.partial(_apply, patch_serving_model_manager)),
    ("transformers.cli.serving.utils", functools.partial(_apply, patch_serving_requests)),
    ("transformers.cli.serving.server", functools.partial(_apply, patch_serving_app)),
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
        for callback in _watched_architectures.values():
            forget(callback)
        _watched_architectures.clear()
        while _undo:
            _undo.pop()()
        if "transformers.heterogeneity.modeling_utils" in sys.modules:
            sys.modules["transformers.heterogeneity.modeling_utils"].unwrap_classes()
        _active = False


def is_active() -> bool:
    return _active
