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
"""CPU kernels for TransformerEngine 2.20.2's compiled extension, written from their math: GEMM, norms, activations.

Each function has the name and positional signature that TE's Python code uses when it calls
`transformer_engine_torch.<name>` (read from the call sites in the `transformer-engine==2.20.2` wheel and from the
pybind11 argument lists in TE's `transformer_engine/pytorch/csrc/extensions/pybind.cpp`). Like the CUDA kernels they
stand in for, they compute in fp32 and round once to the output dtype. Anything that needs FP8/FP4 (a quantizer, a
quantized tensor) or communication raises `NotImplementedError`: the emulation runs fp32/bf16/fp16 only. The
attention kernels are in `attention_kernels.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .enums import DType


# TE's DType -> torch dtype, by value (TE passes either its Python `DType` IntEnum or this module's enum).
_TORCH_DTYPES = {
    int(DType.kByte): torch.uint8,
    int(DType.kInt32): torch.int32,
    int(DType.kFloat32): torch.float32,
    int(DType.kFloat16): torch.float16,
    int(DType.kBFloat16): torch.bfloat16,
}

# The value `get_cudnn_version` reports, encoded as cudnnGetVersion does (major * 10000 + minor * 100 + patch for
# cuDNN 9): TE 2.20.2 refuses cuDNN older than 9.12.0 (`MIN_CUDNN_VERSION` in `transformer_engine/common`). No
# cuDNN code runs: `get_fused_attn_backend` always rejects, so TE selects its unfused PyTorch attention.
CUDNN_VERSION = 91200
# cuBLASLt 12.1.3 (encoded as cublasLtGetVersion does); TE's quantization checks compare against 120103.
CUBLASLT_VERSION = 120103


class EmulationUnsupportedError(NotImplementedError):
    """A TE extension feature the CPU emulation does not provide (FP8, communication overlap, ...)."""


def refuse(feature: str, value: object = None) -> None:
    """Raises for a feature that the emulation cannot run, naming the value that asked for it."""
    raise EmulationUnsupportedError(
        f"the CPU emulation of transformer_engine_torch does not support {feature} (got {value!r}); it runs "
        "fp32/bf16/fp16 math only. Run on a GPU with real TransformerEngine for this."
    )


def check_plain(name: str, *tensors: torch.Tensor | None) -> None:
    """Refuses quantized (FP8/FP4) tensors: TE wraps those in subclasses that are not plain torch tensors."""
    for tensor in tensors:
        if tensor is not None and type(tensor) is not torch.Tensor and not isinstance(tensor, torch.nn.Parameter):
            refuse(f"quantized tensors in {name}", type(tensor).__name__)


def _check_no_quantizer(name: str, quantizer: object) -> None:
    if quantizer is not None:
        refuse(f"output quantizers in {name}", type(quantizer).__name__)


def torch_dtype(te_dtype: object) -> torch.dtype:
    """Maps a TE `DType` (either enum) to the torch dtype it tags."""
    if isinstance(te_dtype, torch.dtype):
        return te_dtype
    try:
        return _TORCH_DTYPES[int(te_dtype)]
    except (KeyError, TypeError):
        refuse("this TE dtype", te_dtype)


def _store(result: torch.Tensor, out: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Rounds `result` once to `dtype`, writing into `out` when TE passes a preallocated buffer."""
    if out is None:
        return result.to(dtype)
    out.copy_(result.view(out.shape))
    return out


# ---------------------------------------------------------------- GEMM


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def generic_gemm(
    A: torch.Tensor,
    transA: bool,
    B: torch.Tensor,
    transB: bool,
    D: torch.Tensor | None,
    quantizer: object,
    output_dtype: object,
    bias: torch.Tensor | None,
    bias_type: object,
    gelu: bool,
    gelu_in: torch.Tensor | None,
    grad: bool,
    workspace: torch.Tensor,
    workspace_size: int,
    accumulate: bool,
    use_split_accumulator: bool,
    comm_overlap: object = None,
    comm_type: object = None,
    extra_output: torch.Tensor | None = None,
    bulk_overlap: bool = False,
    alpha: float = 1.0,
    beta: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """cuBLASLt GEMM in TE's row-major reading: `D = alpha * op(B) @ op(A) (+ beta * D)`, `op` transposing when set.

    TE calls it as `general_gemm(weight, input, layout="TN")` for `input @ weight.T` (forward), `"NN"` for
    `grad @ weight` (dgrad) and `"NT"` for `grad.T @ input` (wgrad). Epilogues, as cuBLASLt applies them in fp32:
    forward (`grad=False`) adds `bias` and, with `gelu`, returns the tanh-GELU and the pre-activation as its third
    output; backward (`grad=True`) multiplies by GELU' of `gelu_in` when `gelu` is set, and returns the bias
    gradient, the column sums of `B` (the output gradient), when `bias` is passed. The fused dGELU + bias-gradient
    epilogue (TE's bias-GELU fusion, not on the Llama path) raises.

    Returns:
        `(D, bias_grad, gelu_in, extra_output)`, as TE's binding does.
    """
    _check_no_quantizer("generic_gemm", quantizer)
    check_plain("generic_gemm", A, B, D)
    if comm_overlap is not None or comm_type is not None or bulk_overlap:
        refuse("communication overlap in generic_gemm", comm_type)
    a = A.float().reshape(-1, A.shape[-1])
    b = B.float().reshape(-1, B.shape[-1])
    op_a = a.t() if transA else a
    op_b = b.t() if transB else b
    product = alpha * (op_b @ op_a)

    bias_grad = None
    if grad:
        if gelu and bias is not None:
            refuse("generic_gemm's fused dGELU + bias-gradient epilogue", "gelu=True, grad=True with bias")
        if gelu:
            product = product * _gelu_derivative(gelu_in.float().view_as(product))
        if bias is not None:
            # TE's binding sizes the bias gradient by B's last dimension: B (the output gradient) summed over rows.
            bias_grad = b.sum(dim=0).to(A.dtype if D is None else D.dtype)
    else:
        if bias is not None:
            product = product + bias.float()
        if gelu:
            gelu_in = _store(product, None, A.dtype if D is None else D.dtype)
            product = _gelu_tanh(product)

    if accumulate:
        if D is None:
            refuse("accumulate=True without an output tensor", None)
        product = product + (1.0 if beta is None else beta) * D.float().view_as(product)
    if D is not None:
        out_shape = D.shape
        dtype = D.dtype
    else:
        # Leading dimensions follow B (the activation operand) when it is not transposed, as in TE's binding.
        rows = B.shape[:-1] if not transB else (op_b.shape[0],)
        out_shape = (*rows, op_a.shape[1])
        dtype = torch_dtype(output_dtype) if output_dtype is not None else A.dtype
    out = _store(product.view(out_shape), D, dtype)
    return out, bias_grad, gelu_in if gelu and not grad else None, extra_output


def _gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    return _vjp(_gelu_tanh, x, torch.ones_like(x))


# ---------------------------------------------------------------- normalization


def _gamma(weight: torch.Tensor, zero_centered_gamma: bool) -> torch.Tensor:
    gamma = weight.float()
    return gamma + 1.0 if zero_centered_gamma else gamma


def rmsnorm_fwd(
    input: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    ln_out: torch.Tensor | None,
    quantizer: object,
    otype: object,
    sm_margin: int,
    zero_centered_gamma: bool,
) -> tuple[torch.Tensor, None, torch.Tensor]:
    """RMSNorm: `y = x / sqrt(mean(x^2) + eps) * gamma`, all in fp32 (the weight too) before one rounding.

    Returns:
        `(y, None, rsigma)` with `rsigma` fp32 per row, as TE's binding does (the `None` is LayerNorm's mean slot).
    """
    _check_no_quantizer("rmsnorm_fwd", quantizer)
    check_plain("rmsnorm_fwd", input, weight)
    x = input.float().reshape(-1, weight.numel())
    rsigma = torch.rsqrt(x.pow(2).mean(dim=-1) + eps)
    y = x * rsigma[:, None] * _gamma(weight, zero_centered_gamma).reshape(-1)
    return _store(y.view(input.shape), ln_out, torch_dtype(otype)), None, rsigma


def rmsnorm_bwd(
    dz: torch.Tensor,
    x: torch.Tensor,
    rsigma: torch.Tensor,
    gamma: torch.Tensor,
    sm_margin: int,
    zero_centered_gamma: bool,
) -> list[torch.Tensor]:
    """RMSNorm backward: with `xhat = x * rsigma`, `dx = rsigma * (g - xhat * mean(g * xhat))` for `g = dz * gamma`.

    Returns:
        `[dx, dgamma]` in the dtypes of `x` and `gamma`.
    """
    check_plain("rmsnorm_bwd", dz, x, gamma)
    hidden = gamma.numel()
    xf = x.float().reshape(-1, hidden)
    dzf = dz.float().reshape(-1, hidden)
    r = rsigma.float().reshape(-1, 1)
    xhat = xf * r
    g = dzf * _gamma(gamma, zero_centered_gamma).reshape(-1)
    dx = r * (g - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    dgamma = (dzf * xhat).sum(dim=0)
    return [dx.view(x.shape).to(x.dtype), dgamma.view(gamma.shape).to(gamma.dtype)]


def layernorm_fwd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    ln_out: torch.Tensor | None,
    quantizer: object,
    otype: object,
    sm_margin: int,
    zero_centered_gamma: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm: `y = (x - mean) / sqrt(var + eps) * gamma + beta` (biased variance), in fp32.

    Returns:
        `(y, mu, rsigma)` with fp32 per-row statistics, as TE's binding does.
    """
    _check_no_quantizer("layernorm_fwd", quantizer)
    check_plain("layernorm_fwd", input, weight, bias)
    x = input.float().reshape(-1, weight.numel())
    mu = x.mean(dim=-1)
    rsigma = torch.rsqrt((x - mu[:, None]).pow(2).mean(dim=-1) + eps)
    y = (x - mu[:, None]) * rsigma[:, None] * _gamma(weight, zero_centered_gamma).reshape(-1)
    if bias is not None:
        y = y + bias.float().reshape(-1)
    return _store(y.view(input.shape), ln_out, torch_dtype(otype)), mu, rsigma


def layernorm_bwd(
    dz: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    rsigma: torch.Tensor,
    gamma: torch.Tensor,
    sm_margin: int,
    zero_centered_gamma: bool,
) -> list[torch.Tensor]:
    """LayerNorm backward: `dx = rsigma * (g - mean(g) - xhat * mean(g * xhat))` for `g = dz * gamma`.

    Returns:
        `[dx, dgamma, dbeta]` in the dtypes of `x`, `gamma` and `gamma`.
    """
    check_plain("layernorm_bwd", dz, x, gamma)
    hidden = gamma.numel()
    xf = x.float().reshape(-1, hidden)
    dzf = dz.float().reshape(-1, hidden)
    r = rsigma.float().reshape(-1, 1)
    xhat = (xf - mu.float().reshape(-1, 1)) * r
    g = dzf * _gamma(gamma, zero_centered_gamma).reshape(-1)
    dx = r * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    dgamma = (dzf * xhat).sum(dim=0)
    dbeta = dzf.sum(dim=0)
    return [
        dx.view(x.shape).to(x.dtype),
        dgamma.view(gamma.shape).to(gamma.dtype),
        dbeta.view(gamma.shape).to(gamma.dtype),
    ]


# ---------------------------------------------------------------- activations


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The exact derivative of an fp32 activation, `grad^T d fn(x) / dx`, by autograd on the math below."""
    _, pullback = torch.func.vjp(fn, x)
    return pullback(grad)[0]


def _glu(inner: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gated unit: TE applies the activation to the first half of the last dimension and gates the second."""

    def gated(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return inner(first) * second

    return gated


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _squared_relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# The activation math TE names (TE's `transformer_engine/common/util/math.h` and its activation docs): GELU is the
# tanh approximation, QuickGELU `x * sigmoid(1.702 x)`, SReLU the squared ReLU, the *GLU forms gate the second half.
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": _gelu_tanh,
    "geglu": _glu(_gelu_tanh),
    "qgelu": _quick_gelu,
    "qgeglu": _glu(_quick_gelu),
    "relu": F.relu,
    "reglu": _glu(F.relu),
    "srelu": _squared_relu,
    "sreglu": _glu(_squared_relu),
    "silu": F.silu,
    "swiglu": _glu(F.silu),
    "glu": _glu(torch.sigmoid),
}


def _make_activation(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(input: torch.Tensor, quantizer: object) -> torch.Tensor:
        _check_no_quantizer(name, quantizer)
        check_plain(name, input)
        return fn(input.float()).to(input.dtype)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"TE's `{name}` activation in fp32, rounded to the input dtype."
    return forward


def _make_activation_backward(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def backward(grad: torch.Tensor, fwd_input: torch.Tensor, quantizer: object) -> torch.Tensor:
        _check_no_quantizer(f"d{name}", quantizer)
        check_plain(f"d{name}", grad, fwd_input)
        return _vjp(fn, fwd_input.float(), grad.float()).to(fwd_input.dtype)

    backward.__name__ = backward.__qualname__ = f"d{name}"
    backward.__doc__ = f"Gradient of TE's `{name}` with respect to its input (fp32), rounded to the input dtype."
    return backward


def _clamped_swiglu_math(limit: float, alpha: float, offset: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """GPT-OSS's SwiGLU as TE's `clamped_swiglu` documents it: gate clamped above at `limit`, linear part to
    `[-limit, limit]`, `gate * sigmoid(alpha * gate) * (linear + offset)`."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        gate, linear = x.chunk(2, dim=-1)
        gate = gate.clamp(max=limit)
        linear = linear.clamp(min=-limit, max=limit)
        return gate * torch.sigmoid(alpha * gate) * (linear + offset)

    return fn


def clamped_swiglu(
    input: torch.Tensor, quantizer: object, limit: float = 7.0, alpha: float = 1.702, glu_linear_offset: float = 1.0
) -> torch.Tensor:
    """TE's clamped SwiGLU (GPT-OSS) in fp32, rounded to the input dtype."""
    _check_no_quantizer("clamped_swiglu", quantizer)
    return _clamped_swiglu_math(limit, alpha, glu_linear_offset)(input.float()).to(input.dtype)


def clamped_dswiglu(
    grad: torch.Tensor,
    fwd_input: torch.Tensor,
    quantizer: object,
    limit: float = 7.0,
    alpha: float = 1.702,
    glu_linear_offset: float = 1.0,
) -> torch.Tensor:
    """Gradient of `clamped_swiglu` with respect to its input."""
    _check_no_quantizer("clamped_dswiglu", quantizer)
    fn = _clamped_swiglu_math(limit, alpha, glu_linear_offset)
    return _vjp(fn, fwd_input.float(), grad.float()).to(fwd_input.dtype)


ACTIVATION_KERNELS: dict[str, Callable[..., torch.Tensor]] = {}
for _name, _fn in _ACTIVATIONS.items():
    ACTIVATION_KERNELS[_name] = _make_activation(_name, _fn)
    ACTIVATION_KERNELS[f"d{_name}"] = _make_activation_backward(_name, _fn)
ACTIVATION_KERNELS["clamped_swiglu"] = clamped_swiglu
ACTIVATION_KERNELS["clamped_dswiglu"] = clamped_dswiglu


# ---------------------------------------------------------------- library queries


def get_cudnn_version() -> int:
    """The encoded cuDNN version TE's checks need (see `CUDNN_VERSION`); no cuDNN kernel is ever run."""
    return CUDNN_VERSION


def get_cublasLt_version() -> int:
    """The encoded cuBLASLt version TE's checks need (see `CUBLASLT_VERSION`); GEMMs run as torch matmuls."""
    return CUBLASLT_VERSION


def get_num_cublas_streams() -> int:
    """How many extra GEMM streams TE allocates workspaces for; the emulation runs everything in order."""
    return 0


def get_stream_priority_range() -> tuple[int, int]:
    """CUDA stream priorities `(least, greatest)`; streams are no-ops on the CPU."""
    return (0, 0)
