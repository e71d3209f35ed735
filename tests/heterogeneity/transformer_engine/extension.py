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
"""A pure-PyTorch stand-in for `transformer_engine_torch`, TE 2.20.2's compiled extension (imported by TE as `tex`).

`emulation.py` registers this module under that name while TE is imported. It exports what TE's Python code reads
at import time and on the fp32/bf16 Llama path:
- the enums (`enums.py`), with TE's exact members and values;
- the data classes TE refers to: `FP8TensorMeta` (a plain holder of its three fields) and the communication-overlap
  classes (`CommOverlap`, `CommOverlapP2P`, `CommOverlapHelper`), which raise when constructed;
- the kernels of `kernels.py` and `attention_kernels.py`, written from their math;
- every other function name of TE 2.20.2's binding (`EXTENSION_FUNCTIONS`), because TE does
  `from transformer_engine_torch import *` and builds dicts of them at import time. Those are `UnavailableKernel`
  objects that raise `EmulationUnsupportedError` when called, never a fake result. A name TE 2.20.2 does not have is
  an `AttributeError`, as on the real module.
"""

from __future__ import annotations

from typing import NoReturn

from . import attention_kernels, kernels
from .enums import ENUMS
from .kernels import EmulationUnsupportedError


# Every function (and submodule) name of TE 2.20.2's extension: the `m.def` names of its pybind11 module, read from the
# `transformer-engine-torch==2.20.2` sdist (`csrc/extensions/pybind.cpp` and `common/util/pybind_helper.h`).
EXTENSION_FUNCTIONS = (
    "bgrad_group_quantize",
    "bgrad_quantize",
    "bulk_allocate",
    "bulk_overlap_ag_with_external_gemm",
    "clamped_dswiglu",
    "clamped_swiglu",
    "compute_amax",
    "convert_bshd_to_thd",
    "convert_thd_to_bshd",
    "copy_data_ptrs_to_device",
    "copy_to_kv_cache",
    "create_empty_quantized_tensor",
    "create_nvshmem_tensor",
    "cusolvermp_ctx_create",
    "cusolvermp_ctx_destroy",
    "dbias_dgelu",
    "dbias_dqgelu",
    "dbias_drelu",
    "dbias_dsilu",
    "dbias_dsrelu",
    "dequantize",
    "device_supports_multicast",
    "dgeglu",
    "dgelu",
    "dglu",
    "dqgeglu",
    "dqgelu",
    "dreglu",
    "drelu",
    "dropout_bwd",
    "dropout_fwd",
    "dsilu",
    "dsituglu",
    "dsreglu",
    "dsrelu",
    "dswiglu",
    "ep_combine",
    "ep_combine_bwd",
    "ep_dispatch",
    "ep_dispatch_bwd",
    "ep_finalize",
    "ep_get_zero_copy",
    "ep_handle_mem_size",
    "ep_initialize",
    "ep_prepare",
    "ep_prepare_and_dispatch",
    "ep_zero_copy_supported",
    "fa_prepare_bwd",
    "fa_prepare_fwd",
    "fp8_block_scaling_compute_partial_amax",
    "fp8_block_scaling_partial_cast",
    "fp8_transpose",
    "fused_amax_and_scale_update_after_reduction",
    "fused_attn_bwd",
    "fused_attn_fwd",
    "fused_moe_aux_loss_bwd",
    "fused_moe_aux_loss_fwd",
    "fused_moe_aux_loss_fwd_graph_safe",
    "fused_multi_row_padding",
    "fused_multi_row_unpadding",
    "fused_qkv_rope_backward",
    "fused_qkv_rope_forward",
    "fused_rope_backward",
    "fused_rope_forward",
    "fused_score_for_moe_aux_loss_bwd",
    "fused_score_for_moe_aux_loss_fwd",
    "fused_topk_with_score_function_bwd",
    "fused_topk_with_score_function_fwd",
    "fused_topk_with_score_function_qb_fwd",
    "geglu",
    "gelu",
    "generic_gemm",
    "get_cublasLt_version",
    "get_cudnn_version",
    "get_fused_attn_backend",
    "get_grouped_gemm_setup_workspace_size",
    "get_num_cublas_streams",
    "get_stream_priority_range",
    "glu",
    "group_dequantize",
    "group_quantize",
    "group_requantize_inplace",
    "group_scaled_clamped_swiglu",
    "group_scaled_swiglu",
    "grouped_mlp_experimental",
    "grouped_swizzle_for_gemm",
    "init_nvshmem_backend",
    "layernorm_bwd",
    "layernorm_fwd",
    "moe_permute_bwd",
    "moe_permute_fwd",
    "moe_unpermute_bwd",
    "moe_unpermute_fwd",
    "multi_tensor_adam",
    "multi_tensor_adam_capturable",
    "multi_tensor_adam_capturable_master",
    "multi_tensor_adam_fp8",
    "multi_tensor_adam_param_remainder",
    "multi_tensor_compute_scale_and_scale_inv",
    "multi_tensor_compute_scale_inv_e8m0",
    "multi_tensor_l2norm",
    "multi_tensor_pad_last_dim",
    "multi_tensor_quantize",
    "multi_tensor_scale",
    "multi_tensor_scale_tensor",
    "multi_tensor_sgd",
    "multi_tensor_swizzle_scales_for_gemm_",
    "multi_tensor_swizzle_scales_for_gemm_unchecked_",
    "multi_tensor_transpose_to_bhsd",
    "multi_tensor_unscale_l2norm",
    "mxfp8_scaling_compute_partial_amax",
    "mxfp8_scaling_partial_cast",
    "newton_schulz",
    "nvfp4_2d_compute_partial_amax",
    "nvfp4_2d_multi_tensor_transpose",
    "nvfp4_2d_partial_cast",
    "nvfp4_2d_scale_transpose",
    "nvfp4_compute_global_scale",
    "nvfp4_compute_per_block_scale",
    "nvfp4_data_transpose",
    "nvfp4_expand_scale_to_fp8",
    "nvfp4_fused_scale",
    "nvfp4_group_quantize_with_amax",
    "nvfp4_multi_tensor_2d_partial_cast",
    "nvfp4_multi_tensor_compute_partial_amax",
    "nvfp4_multi_tensor_fused_scale",
    "nvfp4_quantize_with_amax",
    "nvshmem_finalize",
    "nvshmem_send_on_current_stream",
    "nvshmem_wait_on_current_stream",
    "nvte_built_with_cublasmp",
    "qgeglu",
    "qgelu",
    "quantize",
    "reglu",
    "relu",
    "rmsnorm_bwd",
    "rmsnorm_bwd_add",
    "rmsnorm_fwd",
    "scaled_aligned_causal_masked_softmax_backward",
    "scaled_aligned_causal_masked_softmax_forward",
    "scaled_clamped_dswiglu",
    "scaled_clamped_swiglu",
    "scaled_dsituglu",
    "scaled_dsrelu",
    "scaled_dswiglu",
    "scaled_masked_softmax_backward",
    "scaled_masked_softmax_forward",
    "scaled_situglu",
    "scaled_softmax_backward",
    "scaled_softmax_forward",
    "scaled_srelu",
    "scaled_swiglu",
    "scaled_upper_triang_masked_softmax_backward",
    "scaled_upper_triang_masked_softmax_forward",
    "silu",
    "situglu",
    "split_quantize",
    "splits_to_offsets",
    "splits_to_offsets_multi",
    "sreglu",
    "srelu",
    "swap_first_dims",
    "swiglu",
    "swizzle_scales_for_gemm_",
    "te_general_grouped_gemm",
    "te_general_grouped_gemm_for_discrete_in",
    "te_general_grouped_gemm_for_discrete_out",
    "te_general_grouped_gemm_for_grouped_tensor",
    "thd_copy_valid_tokens_from_per_split_to_rank_local",
    "thd_cp_rank_order_to_sequence_order",
    "thd_get_partitioned_indices",
    "thd_grad_correction",
    "thd_out_correction",
    "thd_read_half_tensor",
    "thd_read_second_half_lse",
    "thd_second_half_lse_correction",
    "thd_sequence_order_to_cp_rank_order",
    "ubuf_built_with_mpi",
)


class UnavailableKernel:
    """A name of TE's extension that the emulation does not implement: importable, but raises when called."""

    def __init__(self, name: str) -> None:
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise EmulationUnsupportedError(
            f"transformer_engine_torch.{self.__name__} is not implemented by the CPU emulation (it covers the "
            "fp32/bf16 Llama-family path: GEMM, norms, activations, rope, softmax, KV cache). Run on a GPU with "
            "real TransformerEngine, or add the kernel to tests/heterogeneity/transformer_engine/ (kernels.py or "
            "attention_kernels.py)."
        )

    def __repr__(self) -> str:
        return f"<unavailable transformer_engine_torch.{self.__name__}>"


class FP8TensorMeta:
    """TE's FP8 scaling state holder (`scale`, `scale_inv`, `amax_history`); FP8 itself is not emulated."""

    def __init__(self) -> None:
        self.scale = None
        self.scale_inv = None
        self.amax_history = None


class _CommunicationOverlap:
    """Userbuffers communication/GEMM overlap needs NCCL and several GPUs: constructing one raises."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise EmulationUnsupportedError(
            f"transformer_engine_torch.{type(self).__name__} (communication overlap) is not available in the CPU "
            "emulation"
        )


class CommOverlapHelper(_CommunicationOverlap):
    pass


class CommOverlap(_CommunicationOverlap):
    pass


class CommOverlapP2P(_CommunicationOverlap):
    pass


IMPLEMENTED = {
    name: getattr(module, name)
    for module, names in (
        (
            kernels,
            (
                "generic_gemm",
                "rmsnorm_fwd",
                "rmsnorm_bwd",
                "layernorm_fwd",
                "layernorm_bwd",
                "get_cudnn_version",
                "get_cublasLt_version",
                "get_num_cublas_streams",
                "get_stream_priority_range",
            ),
        ),
        (
            attention_kernels,
            (
                "fused_rope_forward",
                "fused_rope_backward",
                "get_fused_attn_backend",
                "copy_to_kv_cache",
                "convert_bshd_to_thd",
                "convert_thd_to_bshd",
                "fa_prepare_fwd",
                "fa_prepare_bwd",
            ),
        ),
    )
    for name in names
}
IMPLEMENTED.update(kernels.ACTIVATION_KERNELS)
IMPLEMENTED.update(attention_kernels.SOFTMAX_KERNELS)

_CLASSES = {cls.__name__: cls for cls in (*ENUMS, FP8TensorMeta, CommOverlapHelper, CommOverlap, CommOverlapP2P)}
_UNKNOWN = sorted(set(IMPLEMENTED) - set(EXTENSION_FUNCTIONS))
if _UNKNOWN:
    raise RuntimeError(f"the stand-in implements names TE 2.20.2's extension does not have: {_UNKNOWN}")

globals().update(IMPLEMENTED)
globals().update(_CLASSES)
__all__ = sorted([*_CLASSES, *EXTENSION_FUNCTIONS])


def __getattr__(name: str) -> UnavailableKernel:
    """Resolves the binding's names that the emulation does not implement to kernels that raise when called."""
    if name in EXTENSION_FUNCTIONS:
        return UnavailableKernel(name)
    raise AttributeError(f"module 'transformer_engine_torch' (CPU emulation of TE 2.20.2) has no attribute {name!r}")
