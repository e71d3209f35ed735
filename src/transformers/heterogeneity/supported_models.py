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
"""Registry of the architectures whose stock modeling code honours `per_layer_config`.

Adding an architecture is a data entry: an `ArchitectureSpec` names (as strings, so nothing is imported until a
heterogeneous model of that type is built) the decoder-layer class, the rotary embedding class, for every skip name the
layer members it replaces with what each replacement returns, and what else the architecture can do (decoder backends,
AnyModel block configs). It is the one table keyed by `model_type`: generic code reads its fields and never branches on
`model_type`. Checkpoint families (`checkpoint_formats/`) share the row of the architecture whose stock layers build them. Custom
models opt in with class attributes instead (see `spec_from_model_class`); nothing is written to this table when a
model is built or looked up.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType

from torch import nn

from ..configuration_utils import PreTrainedConfig
from .linear_utils import get_linear_replacement
from .skip_utils import (
    ReturnEntry,
    SkippedModule,
    get_skip_replacement,
    output_and_no_weights,
    passthrough,
    zeros,
    zeros_and_no_weights,
)


__all__ = [
    "ArchitectureSpec",
    "HeterogeneousModelSpec",
    "ModelInitReads",
    "NATIVE_PER_LAYER_MODEL_CLASSES",
    "NATIVE_PER_LAYER_MODEL_TYPES",
    "SUPPORTED_ARCHITECTURES",
    "SkipTarget",
    "get_architecture",
    "register_architecture",
    "resolve_architecture",
]

# Model types whose upstream modeling code reads `config.per_layer_config[layer_idx]` itself (Transformers 5.23).
# They need nothing from this package and are left untouched. `utils/check_upstream.py` keeps this list in sync.
NATIVE_PER_LAYER_MODEL_TYPES = frozenset(
    {"diffusion_gemma", "diffusion_gemma_text", "dots3_note", "dots3_note_audio_encoder", "dots3_note_text",
     "dots3_note_vision_encoder", "embedding_gemma2", "embedding_gemma2_text", "gemma4", "gemma4_audio", "gemma4_text",
     "gemma4_unified", "gemma4_unified_audio", "gemma4_unified_text", "gemma4_unified_vision", "gemma4_vision", "neomme",
     "step3p5", "step3p5_vision", "step3p7"}
)  # fmt: skip

# Model classes of `transformers.modeling_layers` that read `config.per_layer_config[layer_idx]` themselves whatever
# their `model_type` (Transformers 5.23: `MtpModel` builds the multi-token-prediction layers of any architecture from
# `mtp_per_layer_config` and builds each layer's mask from its layer config). `utils/check_upstream.py` keeps it in sync.
NATIVE_PER_LAYER_MODEL_CLASSES = frozenset({"MtpModel"})


def reads_per_layer_config_natively(model_cls: type[nn.Module], config: PreTrainedConfig) -> bool:
    """Whether upstream's own code builds `model_cls` per layer from `config`, so that this package must stay out."""
    if config.model_type in NATIVE_PER_LAYER_MODEL_TYPES:
        return True
    return any(
        klass.__module__ == "transformers.modeling_layers" and klass.__name__ in NATIVE_PER_LAYER_MODEL_CLASSES
        for klass in model_cls.__mro__
    )


@dataclass(frozen=True)
class SkipTarget:
    """A layer member that a skip replaces.

    Args:
        member (`str`): dotted path of the member inside the decoder layer, e.g. `"self_attn"`.
        returns (`Mapping[str, tuple[ReturnEntry, ...]]`): for each class the member may be (by class name), what
            its replacement returns. Several classes let one slot hold different modules, as NemotronH's `mixer`.
        linear (`str`, *optional*): makes the replacement a linear sub-block (see `linear_utils.py`) holding its
            `hidden x hidden` map under this name (`"linear_attn"`), applied to what it returns. Default: a
            parameter-free skip.
        dtype_attributes (`tuple[str, ...]`): attributes of the member that the layer reads only for their dtype
            (NemotronH casts a block's input to `norm.weight.dtype`); a skip keeps them as empty buffers.
    """

    member: str
    returns: Mapping[str, tuple[ReturnEntry, ...]]
    linear: str | None = None
    dtype_attributes: tuple[str, ...] = ()

    def replacement(self, module: ModuleType, class_name: str) -> type[SkippedModule]:
        member_cls = getattr(module, class_name)
        if self.linear is None:
            return get_skip_replacement(member_cls, *self.returns[class_name], dtype_attributes=self.dtype_attributes)
        return get_linear_replacement(member_cls, self.linear, *self.returns[class_name])


@dataclass(frozen=True)
class ModelInitReads:
    """Per-layer attributes that a model class's own `__init__` reads for one model-level feature.

    Args:
        attributes (`frozenset[str]`): read as their global value by the class.
        feature (`str`): the forward argument (and config attribute of the same name) that turns the feature on, e.g.
            `"output_router_logits"`; a forward that asks for it while the attributes differ between layers is
            refused, since the feature would compute with one value for all layers.
    """

    attributes: frozenset[str]
    feature: str


@dataclass(frozen=True)
class ArchitectureSpec:
    """How a built-in architecture is built per layer.

    Args:
        modeling_module (`str`): module holding the classes named below.
        layer (`str`): the decoder-layer class, built once per layer from `config.per_layer_config[layer_idx]`.
        skips (`Mapping[str, tuple[SkipTarget, ...]]`): skip name -> the members it replaces.
        rotary_embedding (`str`, *optional*): the model-level rotary class; layers whose overrides change what it
            reads (e.g. `head_dim`) get their own instance.
        model_reads (`frozenset[str]`): attributes the layers read that the model's own modules read too (Llama's
            final norm reads `rms_norm_eps`): per layer, upstream refuses the model's read unless the config sets
            `allow_global_per_layer_attribute_access=True`, so we refuse them up front with a clear message.
        layer_idx_arg / config_arg (`str`): names of the layer constructor's arguments.
        base_model (`str`, *optional*): the model class that holds the decoder layers in `layers` and builds their
            attention masks; needed for per-layer windows and chunk sizes (`masking_utils.py`).
        base_model_forward_reads (`frozenset[str]`): per-layer mask attributes that the base model's own forward
            reads (Mistral's `sliding_window`); they read as the global value there, since the layers build their
            own masks.
        model_init_reads (`Mapping[str, ModelInitReads]`): model class name -> per-layer attributes that its own
            `__init__` reads for one model-level feature (GPT-OSS's causal-LM head keeps `num_local_experts` for its
            load-balancing loss). Such a class reads them through `modeling_utils.model_init_config`, a config that
            reads them as the global value, and the feature is refused while they differ between layers.
        quantization_reads (`Mapping[str, frozenset[str]]`): quantization method -> per-layer attributes that its
            module replacement reads from the model's global config (MXFP4 kernels rebuild GPT-OSS experts from
            `model.config`); overriding them per layer under that method is refused unless the weights are
            dequantized on load.
        decoder_backends (`frozenset[str]`): run-time decoder backends (`decoder_backend=...`, `backends/`) that can
            run this architecture's layers besides the stock one, e.g. `{"transformer_engine"}`.
        anymodel_blocks (`str`, *optional*): how NVIDIA Model-Optimizer's AnyModel `block_configs` on a config of this
            model type translate into `per_layer_config` (`"dense"` or `"gpt_oss"`, see `checkpoint_formats/anymodel.py`);
            `None`: such configs are not read.
    """

    modeling_module: str
    layer: str
    skips: Mapping[str, tuple[SkipTarget, ...]]
    rotary_embedding: str | None = None
    model_reads: frozenset[str] = frozenset()
    layer_idx_arg: str = "layer_idx"
    config_arg: str = "config"
    base_model: str | None = None
    base_model_forward_reads: frozenset[str] = frozenset()
    model_init_reads: Mapping[str, ModelInitReads] = field(default_factory=dict)
    quantization_reads: Mapping[str, frozenset[str]] = field(default_factory=dict)
    decoder_backends: frozenset[str] = frozenset()
    anymodel_blocks: str | None = None

    def resolve(self) -> HeterogeneousModelSpec:
        """Imports the modeling module and builds the replacement classes."""
        module = importlib.import_module(self.modeling_module)
        skip_descriptors = {
            skip_name: {
                target.member: tuple(target.replacement(module, class_name) for class_name in target.returns)
                for target in targets
            }
            for skip_name, targets in self.skips.items()
        }
        return HeterogeneousModelSpec(
            layer_cls=getattr(module, self.layer),
            skip_descriptors=skip_descriptors,
            rotary_cls=getattr(module, self.rotary_embedding) if self.rotary_embedding else None,
            model_reads=self.model_reads,
            layer_idx_arg=self.layer_idx_arg,
            config_arg=self.config_arg,
            base_model_cls=getattr(module, self.base_model) if self.base_model else None,
            base_model_forward_reads=self.base_model_forward_reads,
            quantization_reads=self.quantization_reads,
        )


@dataclass(frozen=True)
class HeterogeneousModelSpec:
    """A resolved architecture: the classes the generic per-layer mechanism works with."""

    layer_cls: type[nn.Module]
    skip_descriptors: Mapping[str, Mapping[str, tuple[type[SkippedModule], ...]]]
    rotary_cls: type[nn.Module] | None = None
    model_reads: frozenset[str] = frozenset()
    layer_idx_arg: str = "layer_idx"
    config_arg: str = "config"
    base_model_cls: type[nn.Module] | None = None
    base_model_forward_reads: frozenset[str] = frozenset()
    quantization_reads: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _llama_family(prefix: str, model_type: str, **fields) -> ArchitectureSpec:
    """Llama and the architectures that copy its decoder layer (same member names, own class names)."""
    return ArchitectureSpec(
        modeling_module=f"transformers.models.{model_type}.modeling_{model_type}",
        layer=f"{prefix}DecoderLayer",
        rotary_embedding=f"{prefix}RotaryEmbedding",
        base_model=f"{prefix}Model",
        model_reads=frozenset({"rms_norm_eps"}),  # the final norm
        decoder_backends=frozenset({"transformer_engine"}),
        anymodel_blocks="dense",
        skips={
            "attention": (
                SkipTarget("input_layernorm", {f"{prefix}RMSNorm": passthrough("hidden_states")}),
                SkipTarget("self_attn", {f"{prefix}Attention": zeros_and_no_weights("hidden_states")}),
            ),
            "mlp": (
                SkipTarget("post_attention_layernorm", {f"{prefix}RMSNorm": passthrough("hidden_states")}),
                SkipTarget("mlp", {f"{prefix}MLP": zeros("x")}),
            ),
            # Nemotron-NAS `replace_with_linear`: the norm stays, the sub-block becomes one linear map.
            "attention_replaced_by_linear": (
                SkipTarget("self_attn", {f"{prefix}Attention": output_and_no_weights("hidden_states")}, "linear_attn"),
            ),
            "mlp_replaced_by_linear": (SkipTarget("mlp", {f"{prefix}MLP": passthrough("x")}, "linear_mlp"),),
        },
        **fields,
    )


SUPPORTED_ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": _llama_family("Llama", "llama"),
    # MistralModel.forward reads `config.sliding_window` to choose its mask function.
    "mistral": _llama_family("Mistral", "mistral", base_model_forward_reads=frozenset({"sliding_window"})),
    "qwen2": _llama_family("Qwen2", "qwen2"),
    "qwen3": _llama_family("Qwen3", "qwen3"),
    # Dense or MoE per layer comes from the model-level `moe_layers` list; the one `feed_forward` slot holds either.
    # The MoE returns `(output, router_logits)`, which the layer unpacks, so its stand-in returns `(zeros, None)`.
    "llama4_text": ArchitectureSpec(
        modeling_module="transformers.models.llama4.modeling_llama4",
        layer="Llama4TextDecoderLayer",
        rotary_embedding="Llama4TextRotaryEmbedding",
        base_model="Llama4TextModel",
        model_reads=frozenset({"rms_norm_eps"}),  # the final norm
        skips={
            "attention": (
                SkipTarget("input_layernorm", {"Llama4TextRMSNorm": passthrough("x")}),
                SkipTarget("self_attn", {"Llama4TextAttention": zeros_and_no_weights("hidden_states")}),
            ),
            "mlp": (
                SkipTarget("post_attention_layernorm", {"Llama4TextRMSNorm": passthrough("x")}),
                SkipTarget(
                    "feed_forward",
                    {"Llama4TextMLP": zeros("x"), "Llama4TextMoe": zeros_and_no_weights("hidden_states")},
                ),
            ),
        },
    ),
    # A NemotronH block is one `norm` and one `mixer` whose class follows the block's type in `layers_block_type`
    # (Mamba2, attention, MLP or MoE), so one skip empties any block. Its attention has no rotary embedding. Skipped
    # mixers hold no cache state at all: no KV, and no conv / SSM state for Mamba2 (`"dummy"` cache layers).
    "nemotron_h": ArchitectureSpec(
        modeling_module="transformers.models.nemotron_h.modeling_nemotron_h",
        layer="NemotronHBlock",
        # The final norm reads `layer_norm_epsilon`; `_init_weights` reads the Mamba2 head count and time step.
        model_reads=frozenset({"layer_norm_epsilon", "mamba_num_heads", "time_step_min"}),
        skips={
            "mixer": (
                # The block casts its input to `norm.weight.dtype` before calling the norm.
                SkipTarget("norm", {"NemotronHRMSNorm": passthrough("hidden_states")}, dtype_attributes=("weight",)),
                SkipTarget(
                    "mixer",
                    {
                        "NemotronHMamba2Mixer": zeros("hidden_states"),
                        "NemotronHAttention": zeros_and_no_weights("hidden_states"),
                        "NemotronHMLP": zeros("x"),
                        "NemotronHMoE": zeros("hidden_states"),
                    },
                ),
            ),
        },
    ),
    "gpt_oss": ArchitectureSpec(
        modeling_module="transformers.models.gpt_oss.modeling_gpt_oss",
        layer="GptOssDecoderLayer",
        rotary_embedding="GptOssRotaryEmbedding",
        base_model="GptOssModel",
        model_reads=frozenset({"rms_norm_eps"}),  # the final norm
        # The causal-LM head keeps the expert counts only for its load-balancing loss.
        model_init_reads={
            "GptOssForCausalLM": ModelInitReads(
                frozenset({"num_local_experts", "num_experts_per_tok"}), "output_router_logits"
            )
        },
        quantization_reads={"mxfp4": frozenset({"num_local_experts", "intermediate_size"})},
        anymodel_blocks="gpt_oss",
        skips={
            "attention": (
                SkipTarget("input_layernorm", {"GptOssRMSNorm": passthrough("hidden_states")}),
                SkipTarget("self_attn", {"GptOssAttention": zeros_and_no_weights("hidden_states")}),
            ),
            "mlp": (
                SkipTarget("post_attention_layernorm", {"GptOssRMSNorm": passthrough("hidden_states")}),
                # The MoE block returns `(hidden_states, router_scores)`; the layer drops the scores.
                SkipTarget("mlp", {"GptOssMLP": zeros_and_no_weights("hidden_states")}),
            ),
        },
    ),
}


def _add_checkpoint_families() -> None:
    """Checkpoint families (`checkpoint_formats/`: `nemotron-nas`, `deci`, `gpt_oss_puzzle`, `nemotron_h_puzzle`) are built by the
    stock layers of the architecture they derive from: their rows are that architecture's spec (an alias)."""
    from .checkpoint_formats import CHECKPOINT_FORMATS

    for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
        SUPPORTED_ARCHITECTURES[model_type] = SUPPORTED_ARCHITECTURES[checkpoint_format.architecture]


_add_checkpoint_families()

_registry_lock = threading.Lock()


def register_architecture(model_type: str, spec: ArchitectureSpec, overwrite: bool = False) -> None:
    """Declares how a built-in or third-party architecture is built per layer.

    Raises:
        ValueError: `model_type` is already registered (pass `overwrite=True` to replace it) or reads
            `per_layer_config` natively.
    """
    with _registry_lock:
        if model_type in NATIVE_PER_LAYER_MODEL_TYPES:
            raise ValueError(f"'{model_type}' reads `per_layer_config` natively and must not be registered.")
        if model_type in SUPPORTED_ARCHITECTURES and not overwrite:
            raise ValueError(
                f"Architecture '{model_type}' is already registered; pass `overwrite=True` to replace its spec."
            )
        SUPPORTED_ARCHITECTURES[model_type] = spec
        _resolve.cache_clear()


@functools.cache
def _resolve(model_type: str) -> HeterogeneousModelSpec:
    return SUPPORTED_ARCHITECTURES[model_type].resolve()


def resolve_architecture(model_type: str) -> HeterogeneousModelSpec:
    """The resolved registry row of `model_type` (imports its modeling module)."""
    return _resolve(model_type)


def spec_from_model_class(model_cls: type[nn.Module]) -> HeterogeneousModelSpec | None:
    """The spec a custom `PreTrainedModel` subclass declares with `_layer_cls` and `_skip_descriptors`.

    `_skip_descriptors` maps a skip name to `{member_path: replacement}`, where the replacement is a class from
    `get_skip_replacement` or a tuple of them (one per class the member may be). Optional class attributes:
    `_rotary_embedding_cls`, `_model_reads`, `_layer_idx_arg`, `_layer_config_arg`, `_base_model_cls`,
    `_base_model_forward_reads`. Which skips remove a layer's cache state is part of the skip vocabulary
    (`cache_utils.SKIPS_WITHOUT_CACHE_STATE`), not of a model's declaration, so that caches made from a config alone
    know it.
    """
    layer_cls = getattr(model_cls, "_layer_cls", None)
    if layer_cls is None:
        return None
    descriptors = getattr(model_cls, "_skip_descriptors", None) or {}
    for skip_name, members in descriptors.items():
        for member, replacement in members.items():
            replacements = replacement if isinstance(replacement, tuple) else (replacement,)
            if not all(isinstance(r, type) and issubclass(r, SkippedModule) for r in replacements):
                raise TypeError(
                    f"{model_cls.__name__}._skip_descriptors[{skip_name!r}][{member!r}] must be a class made by "
                    f"`get_skip_replacement` (or a tuple of them), got {replacement!r}."
                )
    return HeterogeneousModelSpec(
        layer_cls=layer_cls,
        skip_descriptors={
            skip_name: {member: r if isinstance(r, tuple) else (r,) for member, r in members.items()}
            for skip_name, members in descriptors.items()
        },
        rotary_cls=getattr(model_cls, "_rotary_embedding_cls", None),
        model_reads=frozenset(getattr(model_cls, "_model_reads", ())),
        layer_idx_arg=getattr(model_cls, "_layer_idx_arg", "layer_idx"),
        config_arg=getattr(model_cls, "_layer_config_arg", "config"),
        base_model_cls=getattr(model_cls, "_base_model_cls", None),
        base_model_forward_reads=frozenset(getattr(model_cls, "_base_model_forward_reads", ())),
    )


def get_architecture(config: PreTrainedConfig) -> ArchitectureSpec | None:
    """The registry row of a config's `model_type` (`None` for architectures not in the registry)."""
    return SUPPORTED_ARCHITECTURES.get(getattr(config, "model_type", None))


def get_config_spec(config: PreTrainedConfig) -> HeterogeneousModelSpec | None:
    """The resolved registry row of a config's `model_type`, for code that has a config but no model."""
    model_type = getattr(config, "model_type", None)
    return _resolve(model_type) if model_type in SUPPORTED_ARCHITECTURES else None
