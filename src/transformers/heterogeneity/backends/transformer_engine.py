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
"""Decoder layers that run on NVIDIA TransformerEngine (TE), built from the stock layer they replace.

A `TransformerEngineDecoderLayer` holds the modules TE's own `TransformerLayer` is made of, under the same names, so
its state dict is `TransformerLayer`'s: `self_attention` (`LayerNormLinear` for the input norm and the q/k/v
projections, optional `RMSNorm` q/k norms, `DotProductAttention`, `Linear` output projection) and `layernorm_mlp`
(`LayerNormMLP`: post-attention norm, fused gate/up projection with SwiGLU, down projection). A skipped attention or
MLP holds nothing; a linear sub-block (`x + W @ norm(x)`) is one TE `LayerNormLinear`.

The layer runs those modules itself instead of calling `TransformerLayer.forward`, because TE's only KV cache is its
`InferenceParams`: one KV shape for all layers (heterogeneous layers differ), a non-paged cache that advances each
sequence by one token per step, no beam reordering, and right padding only. Here the keys and values live in HF's own
`Cache` (`past_key_values.update`), so `get_seq_length`, beam-search reordering, cropping, static caches, per-layer
windows and a TE layer at index 0 work as for stock layers. Rope is applied with the architecture's own function to
the `(cos, sin)` the model's rotary embedding computed, which is exact for every rope type (llama3, yarn's
`attention_scaling`, dynamic) and for per-row positions of left-padded batches. HF masks become TE's convention
(True = masked out) as an `"arbitrary"` mask; without a mask (no padding) attention is causal, aligned bottom-right
for cached steps.

Every member of the stock layer is checked before anything is built: a layer the TE modules cannot express exactly
(another activation, LayerNorm instead of RMSNorm, q/k/v projections with mixed biases, an unknown member) is refused
with its layer index and attribute.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...modeling_layers import GradientCheckpointingLayer
from ...utils import logging
from ..linear_utils import LinearSubBlock
from ..skip_utils import SkippedModule
from .selection import TRANSFORMER_ENGINE, DecoderBackendError, TransformerEngineBackend, plan_layer_backends
from .transformer_engine_precision import ModelPrecision, check_fp8_plan, model_precision, pad_tokens
from .transformer_engine_weights import layer_weight_conversions


logger = logging.get_logger(__name__)

__all__ = [
    "TESTED_TRANSFORMER_ENGINE_VERSION",
    "TransformerEngineDecoderLayer",
    "TransformerEngineUnavailableError",
    "build_transformer_engine_layers",
    "import_transformer_engine",
]

# The TE release this backend is written against and tested with (module names, argument names, state-dict names).
TESTED_TRANSFORMER_ENGINE_VERSION = "2.20.2"
_ATTENTION_MEMBERS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"})
_MLP_MEMBERS = frozenset({"gate_proj", "up_proj", "down_proj", "act_fn"})
_LAYER_MEMBERS = frozenset({"input_layernorm", "self_attn", "post_attention_layernorm", "mlp", "rotary_emb"})
# `hidden_act` values TE's `swiglu` computes exactly: SiLU of the first half (gate) times the second half (up).
_SWIGLU_ACTIVATIONS = frozenset({"silu", "swish"})
# TE's "no sliding window" for an "arbitrary" mask (the mask holds any window); `None` would become `(-1, 0)`.
_NO_WINDOW = (-1, -1)


class TransformerEngineUnavailableError(ImportError):
    """TransformerEngine was asked for, but it or a CUDA device is missing."""


def import_transformer_engine() -> Any:
    """`transformer_engine.pytorch`, or a clear error saying what to install.

    TE's top-level `__init__` swallows import errors of its framework extensions, so `transformer_engine.pytorch` is
    imported explicitly to see the real one (TE 2.20.2, `transformer_engine/__init__.py`).

    Raises:
        TransformerEngineUnavailableError: TE is not installed, cannot load, or no CUDA device is visible.
    """
    try:
        import transformer_engine.pytorch as te
    except (ImportError, OSError, RuntimeError) as error:
        # The `core_cu12` / `core_cu13` extra brings TE's core library built for that CUDA major version; `pytorch`
        # alone brings only the extension (TE 2.20.2 wheel metadata; `common/__init__.py` refuses a missing core).
        major = torch.version.cuda.split(".")[0] if torch.version.cuda else None
        extra = f"core_cu{major}" if major else "core_cu12"
        install = (
            f"`pip install --no-build-isolation 'transformer-engine[pytorch,{extra}]=={TESTED_TRANSFORMER_ENGINE_VERSION}'`"
            + (f" (the core for torch's CUDA {major})" if major else " (core_cu13 for a CUDA 13 build of torch)")
        )
        raise TransformerEngineUnavailableError(
            "decoder_backend='transformer_engine' needs NVIDIA TransformerEngine for PyTorch, which could not be "
            f"imported ({type(error).__name__}: {error}). On a machine with a CUDA GPU and a CUDA build of torch, "
            f"install it with {install}; its PyTorch extension compiles against torch and needs the CUDA toolkit. Or "
            "leave decoder_backend unset to run the stock layers."
        ) from error
    if not torch.cuda.is_available():
        raise TransformerEngineUnavailableError(
            "decoder_backend='transformer_engine' needs a CUDA GPU: TransformerEngine has no CPU path, and "
            f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build {torch.version.cuda}). "
            "Install a CUDA build of torch on a machine with an NVIDIA GPU, or leave decoder_backend unset."
        )
    return te


@dataclass(frozen=True)
class _LayerShape:
    """What a stock Llama-family layer computes, read from its modules: every value the TE modules need."""

    attention: str  # "attention", "linear" or "skipped"
    mlp: str  # "mlp", "linear" or "skipped"
    hidden_size: int
    input_norm_eps: float | None = None
    post_norm_eps: float | None = None
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    scaling: float = 1.0
    attention_dropout: float = 0.0
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm_eps: float | None = None
    sliding_window: int | None = None
    intermediate_size: int = 0
    mlp_bias: bool = False


def _refuse(layer_idx: int, attribute: str, detail: str) -> DecoderBackendError:
    return DecoderBackendError(
        f"Layer {layer_idx}: decoder_backend='transformer_engine' cannot run `{attribute}`: {detail}. Run this layer "
        "on the stock backend (leave it out of the decoder_backend layers)."
    )


def _rms_norm_eps(norm: nn.Module, layer_idx: int, name: str) -> float:
    params = {param_name for param_name, _ in norm.named_parameters()}
    eps = getattr(norm, "variance_epsilon", None)
    if not type(norm).__name__.endswith("RMSNorm") or params != {"weight"} or eps is None:
        raise _refuse(layer_idx, name, f"it is a {type(norm).__name__} with {sorted(params)}, TE runs RMSNorm only")
    return float(eps)


def _shared_bias(modules: list[nn.Linear], layer_idx: int, attribute: str) -> bool:
    biases = {module.bias is not None for module in modules}
    if len(biases) != 1:
        raise _refuse(layer_idx, attribute, "some of its projections have a bias and others not, TE has one flag")
    return biases.pop()


def _read_layer_shape(stock_layer: nn.Module, layer_config: Any, layer_idx: int) -> _LayerShape:
    """Reads and checks every member of a stock layer (check everything first, then build)."""
    unknown = sorted({name for name, _ in stock_layer.named_children()} - _LAYER_MEMBERS)
    if unknown:
        raise _refuse(layer_idx, unknown[0], f"{type(stock_layer).__name__} has a member TE layers do not know")
    attention, mlp = _sub_block_kind(stock_layer.self_attn, "attention"), _sub_block_kind(stock_layer.mlp, "mlp")
    fields: dict[str, Any] = {"hidden_size": layer_config.hidden_size, "attention": attention, "mlp": mlp}
    if attention == "attention":
        fields.update(_read_attention(stock_layer.self_attn, layer_config, layer_idx))
    if attention != "skipped":
        fields["input_norm_eps"] = _rms_norm_eps(stock_layer.input_layernorm, layer_idx, "input_layernorm")
    if mlp == "mlp":
        fields.update(_read_mlp(stock_layer.mlp, layer_config, layer_idx))
    if mlp != "skipped":
        fields["post_norm_eps"] = _rms_norm_eps(
            stock_layer.post_attention_layernorm, layer_idx, "post_attention_layernorm"
        )
    return _LayerShape(**fields)


def _sub_block_kind(module: nn.Module, kind: str) -> str:
    """`"linear"` for a linear sub-block, `"skipped"` for a skipped one, else `kind`."""
    if isinstance(module, LinearSubBlock):  # before SkippedModule: a linear sub-block is a kind of replacement
        return "linear"
    return "skipped" if isinstance(module, SkippedModule) else kind


def _read_attention(attention: nn.Module, layer_config: Any, layer_idx: int) -> dict[str, Any]:
    unknown = sorted({name for name, _ in attention.named_children()} - _ATTENTION_MEMBERS)
    if unknown:
        raise _refuse(
            layer_idx, f"self_attn.{unknown[0]}", f"{type(attention).__name__} has a member TE does not know"
        )
    projections = [attention.q_proj, attention.k_proj, attention.v_proj]
    head_dim = attention.head_dim
    fields = {
        "num_heads": attention.q_proj.out_features // head_dim,
        "num_kv_heads": attention.k_proj.out_features // head_dim,
        "head_dim": head_dim,
        "scaling": float(attention.scaling),
        "attention_dropout": float(attention.attention_dropout),
        "qkv_bias": _shared_bias(projections, layer_idx, "attention_bias"),
        "o_bias": attention.o_proj.bias is not None,
        # Qwen2/Qwen3 keep the layer's window on the attention; Mistral reads it from the layer's config.
        "sliding_window": getattr(attention, "sliding_window", getattr(layer_config, "sliding_window", None)),
    }
    norms = [name for name in ("q_norm", "k_norm") if hasattr(attention, name)]
    if norms:
        if len(norms) != 2:
            raise _refuse(layer_idx, f"self_attn.{norms[0]}", "TE normalises queries and keys together or not at all")
        q_eps = _rms_norm_eps(attention.q_norm, layer_idx, "self_attn.q_norm")
        if q_eps != _rms_norm_eps(attention.k_norm, layer_idx, "self_attn.k_norm"):
            raise _refuse(layer_idx, "self_attn.k_norm", "its eps differs from q_norm's, TE has one qk_norm_eps")
        if attention.q_norm.weight.shape[-1] != head_dim:
            raise _refuse(layer_idx, "self_attn.q_norm", "it normalises more than one head, TE's q/k norm is per head")
        fields["qk_norm_eps"] = q_eps
    return fields


def _read_mlp(mlp: nn.Module, layer_config: Any, layer_idx: int) -> dict[str, Any]:
    unknown = sorted({name for name, _ in mlp.named_children()} - _MLP_MEMBERS)
    if unknown:
        raise _refuse(layer_idx, f"mlp.{unknown[0]}", f"{type(mlp).__name__} has a member TE does not know")
    activation = layer_config.hidden_act
    if activation not in _SWIGLU_ACTIVATIONS:
        raise _refuse(layer_idx, "hidden_act", f"{activation!r} is not SiLU, TE's gated MLP here is SwiGLU")
    return {
        "intermediate_size": mlp.gate_proj.out_features,
        "mlp_bias": _shared_bias([mlp.gate_proj, mlp.up_proj, mlp.down_proj], layer_idx, "mlp_bias"),
    }


class TransformerEngineAttention(nn.Module):
    """The attention half of TE's `TransformerLayer` (`MultiheadAttention`'s modules and names), run step by step
    so that the keys and values go through HF's `Cache`."""

    def __init__(self, te: Any, shape: _LayerShape, layer_idx: int, init_method, device, dtype):
        super().__init__()
        q_size, kv_size = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        self.split_sizes = (q_size, kv_size, kv_size)
        self.head_dim = shape.head_dim
        common = {"params_dtype": dtype, "device": device}
        # Separate q/k/v parameters (`parameters_split`) map one to one to HF's projections (TE's `te_llama.py` example).
        self.layernorm_qkv = te.LayerNormLinear(
            shape.hidden_size,
            sum(self.split_sizes),
            eps=shape.input_norm_eps,
            bias=shape.qkv_bias,
            normalization="RMSNorm",
            init_method=init_method,
            parameters_split={"query": q_size, "key": kv_size, "value": kv_size},
            **common,
        )
        if shape.qk_norm_eps is not None:
            self.q_norm = te.RMSNorm(shape.head_dim, eps=shape.qk_norm_eps, **common)
            self.k_norm = te.RMSNorm(shape.head_dim, eps=shape.qk_norm_eps, **common)
        else:
            self.q_norm = self.k_norm = None
        self.core_attention = te.DotProductAttention(
            shape.num_heads,
            shape.head_dim,
            num_gqa_groups=shape.num_kv_heads,
            attention_dropout=shape.attention_dropout,
            qkv_format="bshd",
            layer_number=layer_idx + 1,  # distinct per layer (TE keys its per-layer state by it)
            softmax_scale=shape.scaling,
        )
        self.proj = te.Linear(q_size, shape.hidden_size, bias=shape.o_bias, init_method=init_method, **common)
        # HF's convention: a window of `w` tokens is the query and the `w - 1` before it.
        self.window_size = None if shape.sliding_window is None else (shape.sliding_window - 1, 0)


class TransformerEngineDecoderLayer(GradientCheckpointingLayer):
    """A decoder layer running on TE modules; see the module docstring. Built by `build_transformer_engine_layer`."""

    def __init__(
        self,
        te: Any,
        shape: _LayerShape,
        layer_idx: int,
        apply_rotary_pos_emb,
        init_method,
        device,
        dtype,
        precision: ModelPrecision,
        fp8: bool = False,
    ):
        super().__init__()
        self.layer_idx = layer_idx
        self.shape = shape
        self._te = te
        self._apply_rotary_pos_emb = apply_rotary_pos_emb
        self.precision = precision
        self.fp8 = fp8
        # FP8 GEMMs need the token count aligned (`transformer_engine_precision.py`); other layers need nothing.
        self.token_alignment = precision.token_alignment if fp8 else 1
        common = {"params_dtype": dtype, "device": device, "init_method": init_method}

        def linear_sub_block(eps: float) -> nn.Module:  # `x + W @ norm(x)`
            return te.LayerNormLinear(
                shape.hidden_size, shape.hidden_size, eps=eps, bias=False, normalization="RMSNorm", **common
            )

        self.self_attention = None
        if shape.attention == "attention":
            self.self_attention = TransformerEngineAttention(te, shape, layer_idx, init_method, device, dtype)
        elif shape.attention == "linear":
            self.self_attention = linear_sub_block(shape.input_norm_eps)
        self.layernorm_mlp = None
        if shape.mlp == "mlp":
            self.layernorm_mlp = te.LayerNormMLP(
                shape.hidden_size, shape.intermediate_size, eps=shape.post_norm_eps, bias=shape.mlp_bias,
                normalization="RMSNorm", activation="swiglu", output_layer_init_method=init_method, **common,
            )  # fmt: skip
        elif shape.mlp == "linear":
            self.layernorm_mlp = linear_sub_block(shape.post_norm_eps)
        for module in self.modules():
            if type(module).__module__.startswith("transformer_engine."):
                # HF's `_init_weights` would reset them (it sets `weight` of any "*LayerNorm*" class to 1, which is the
                # projection of `LayerNormLinear`); TE initialised them with `init_method` already.
                module._is_hf_initialized = True
        # TE modules write `_extra_state` (FP8 metadata) entries; the HF checkpoint has none (TE 2.20.2, `module/base.py`).
        self.register_state_dict_post_hook(_drop_extra_state)
        self.register_load_state_dict_post_hook(_ignore_missing_extra_state)

    @property
    def backend(self) -> str:
        return "transformer_engine (fp8)" if self.fp8 else "transformer_engine"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        # FP8 with the model's recipe where chosen, off otherwise (an outer autocast cannot then run a layer whose
        # dimensions FP8 cannot take); the recipe object is the model's, built once (`transformer_engine_precision.py`).
        with self._te.autocast(enabled=self.fp8, recipe=self.precision.recipe):
            if isinstance(self.self_attention, TransformerEngineAttention):
                hidden_states = hidden_states + self._attend(
                    hidden_states, attention_mask, position_embeddings, past_key_values
                )
            elif self.self_attention is not None:
                hidden_states = hidden_states + self._gemm(self.self_attention, hidden_states)
            if self.layernorm_mlp is not None:
                hidden_states = hidden_states + self._gemm(self.layernorm_mlp, hidden_states)
        return hidden_states

    def _gemm(self, module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """A TE module with GEMMs on `hidden_states`, its token rows padded to what FP8 needs (a no-op without FP8)."""
        return pad_tokens(module, hidden_states, self.token_alignment)

    def _attend(self, hidden_states, attention_mask, position_embeddings, past_key_values) -> torch.Tensor:
        attention = self.self_attention
        batch_size, query_length, _ = hidden_states.shape
        query, key, value = (
            states.view(batch_size, query_length, -1, attention.head_dim)  # bshd
            for states in self._gemm(attention.layernorm_qkv, hidden_states).split(attention.split_sizes, dim=-1)
        )
        if attention.q_norm is not None:  # before rope, as Qwen3 does
            query, key = attention.q_norm(query), attention.k_norm(key)
        cos, sin = position_embeddings
        query, key = self._apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=2)
        if past_key_values is not None:
            # HF's cache layout is [batch, kv_heads, tokens, head_dim].
            key, value = past_key_values.update(key.transpose(1, 2), value.transpose(1, 2), self.layer_idx)
            key, value = key.transpose(1, 2).contiguous(), value.transpose(1, 2).contiguous()
        mask, mask_type, window_size = _te_mask(attention_mask, attention.window_size, self.layer_idx)
        context = attention.core_attention(
            query.contiguous(),
            key,
            value,
            attention_mask=mask,
            attn_mask_type=mask_type,
            window_size=window_size,
            qkv_format="bshd",
        )
        return self._gemm(attention.proj, context)

    def weight_conversions(self, prefix: str) -> list[Any]:
        """Load-time transforms from HF checkpoint names under `prefix` (`layers.3.`) to this layer's; `save_pretrained`
        applies their reverse (see `transformer_engine_weights.py`)."""
        return layer_weight_conversions(self.shape, prefix)


def _te_mask(attention_mask: Any, window_size: tuple[int, int] | None, layer_idx: int):
    """HF's mask as TE's `(attention_mask, attn_mask_type, window_size)`.

    HF gives a 4D mask (sdpa: bool, True = attend; eager: additive, 0 = attend) or `None` when no padding lets the
    causal mask be implied (sdpa); TE's boolean masks are True where masked out (TE 2.20.2, `attention/dot_product_attention`). TE's
    `"arbitrary"` mask is the caller's mask as is (TE runs it on its unfused backend); an implied causal mask is
    aligned bottom-right, which covers a cached step (queries are the last positions) and equals top-left without a
    cache. Without a mask the layer's window goes to TE: HF's own SDPA masks hold the window whenever it binds
    (transformers 5.23 `masking_utils._ignore_causal_mask_sdpa` never skips a mask once the keys reach the window), but
    a caller may give none (a per-layer-type mapping of `None`, as flash-style mask functions do).
    """
    if attention_mask is None:
        return None, "causal_bottom_right", window_size
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 4:
        found = (
            f"a {attention_mask.ndim}D tensor"
            if isinstance(attention_mask, torch.Tensor)
            else type(attention_mask).__name__
        )
        raise DecoderBackendError(
            f"Layer {layer_idx}: a TE layer needs a 4D attention mask or None, got {found}; build the model with "
            "attn_implementation='sdpa' or 'eager' (flash and flex attention masks are not TE masks)."
        )
    masked_out = ~attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0
    return masked_out, "arbitrary", _NO_WINDOW


def _drop_extra_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [key for key in state_dict if key.startswith(prefix) and key.endswith("_extra_state")]:
        del state_dict[key]


def _ignore_missing_extra_state(module: nn.Module, incompatible_keys) -> None:
    incompatible_keys.missing_keys[:] = [
        key for key in incompatible_keys.missing_keys if not key.endswith("_extra_state")
    ]


def build_transformer_engine_layers(
    layers: nn.ModuleList, config: Any, choice: TransformerEngineBackend
) -> dict[int, TransformerEngineDecoderLayer]:
    """The TE layers of a model built from `config`, by layer index: each computes what its stock layer in `layers`
    (built from `config.per_layer_config[i]`) computes, on the same device and in the same dtype. Every chosen layer
    is checked before the first is built. A layer's weights are TE's initialisation with the config's
    `initializer_range`, or, for stock layers on the meta device (`from_pretrained`), nothing until loading.

    Raises:
        TransformerEngineUnavailableError: TE or CUDA is missing.
        DecoderBackendError: a stock layer has something TE cannot express, or FP8 was asked for where the recipe or
            the device cannot run it.
    """
    te = import_transformer_engine()
    precision = model_precision(te, choice)
    plan = [
        entry
        for entry in plan_layer_backends(config, choice, fp8_alignment=precision.alignment)
        if entry.backend == TRANSFORMER_ENGINE
    ]
    shapes = {
        entry.layer_idx: _read_layer_shape(
            layers[entry.layer_idx], config.per_layer_config[entry.layer_idx], entry.layer_idx
        )
        for entry in plan
    }
    check_fp8_plan(te, plan, precision)
    fp8_layers = [entry.layer_idx for entry in plan if entry.fp8]
    if fp8_layers:
        logger.info(
            f"TransformerEngine FP8 ({precision.recipe_name}) on layers {fp8_layers}: their GEMMs' token rows are padded "
            f"to a multiple of {precision.token_alignment}."
        )
    built = {}
    for entry in plan:
        stock_layer, layer_config = layers[entry.layer_idx], config.per_layer_config[entry.layer_idx]
        reference = next(iter(stock_layer.parameters()), None)
        device = reference.device if reference is not None else torch.get_default_device()
        dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        init_method = functools.partial(
            nn.init.normal_, mean=0.0, std=getattr(layer_config, "initializer_range", 0.02)
        )
        # The architecture's own rope function, so that the TE layer rotates exactly as the stock layer does.
        apply_rotary_pos_emb = sys.modules[type(stock_layer).__module__].apply_rotary_pos_emb
        built[entry.layer_idx] = TransformerEngineDecoderLayer(
            te, shapes[entry.layer_idx], entry.layer_idx, apply_rotary_pos_emb, init_method, _te_device(device), dtype,
            precision, fp8=entry.fp8,
        )  # fmt: skip
    return built


def _te_device(device: torch.device) -> torch.device | str:
    """The `device` argument for TE modules: the string `"meta"` for the meta device.

    TE 2.20.2's `Linear`, `LayerNormLinear` and `LayerNormMLP` defer their initialisation only when `device == "meta"`
    (`module/linear.py`, `module/layernorm_linear.py`, `module/layernorm_mlp.py`: `reset_parameters(defer_init=device
    == "meta")`), and `torch.device("meta") == "meta"` is False: given the `torch.device`, `reset_parameters`
    (`module/base.py`) allocates every parameter on the GPU and initialises it, before loading overwrites it.
    """
    return "meta" if device.type == "meta" else device
