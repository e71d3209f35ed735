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
"""The CPU emulation of TransformerEngine: each stand-in kernel against plain torch math (forward and backward), and
the emulation's scope and honesty.

Kernel tests call the stand-in directly with TE's positional arguments; references are written here from the math
(or are stock HF / torch functions), never the kernels themselves.
"""

import math
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from . import emulation, extension, runtime, triton_standin
from .enums import DType, NVTE_Fused_Attn_Backend, NVTE_QKV_Format
from .kernels import EmulationUnsupportedError


tex = extension
NO_WORKSPACE = torch.empty(0, dtype=torch.uint8)


def _gemm(A, transa, B, transb, out=None, bias=None, grad=False, accumulate=False, out_dtype=None):
    # TE's positional order (`general_gemm` in transformer_engine/pytorch/cpp_extensions/gemm.py).
    return tex.generic_gemm(
        A, transa, B, transb, out, None, out_dtype, bias, DType.kFloat32, False, None, grad, NO_WORKSPACE, 0,
        accumulate, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "reference"),
    [("TN", lambda a, b: b @ a.T), ("NN", lambda a, b: b @ a), ("NT", lambda a, b: b.T @ a)],
)
def test_gemm_layouts(layout, reference):
    shapes = {"TN": ((48, 32), (10, 32)), "NN": ((48, 32), (10, 48)), "NT": ((10, 32), (10, 48))}[layout]
    a, b = torch.randn(shapes[0]), torch.randn(shapes[1])

    out, bias_grad, gelu_in, extra = _gemm(a, layout[0] == "T", b, layout[1] == "T")

    torch.testing.assert_close(out, reference(a, b))
    assert bias_grad is None and gelu_in is None and extra is None


def test_gemm_bias_accumulate_and_bias_gradient():
    weight, x = torch.randn(48, 32), torch.randn(2, 5, 32)
    bias = torch.randn(48)
    out, _, _, _ = _gemm(weight, True, x, False, bias=bias)
    torch.testing.assert_close(out, F.linear(x, weight, bias))
    assert out.shape == (2, 5, 48)

    grad_out, inputs = torch.randn(10, 48), torch.randn(10, 32)
    existing = torch.randn(48, 32)
    wgrad, bias_grad, _, _ = _gemm(inputs, False, grad_out, True, out=existing.clone(), bias=bias, grad=True)
    torch.testing.assert_close(wgrad, grad_out.T @ inputs)
    torch.testing.assert_close(bias_grad, grad_out.sum(dim=0))
    accumulated, _, _, _ = _gemm(inputs, False, grad_out, True, out=existing.clone(), accumulate=True)
    torch.testing.assert_close(accumulated, existing + grad_out.T @ inputs)


def test_gemm_gelu_epilogues():
    weight, x = torch.randn(48, 32), torch.randn(6, 32)
    out, _, pre_gelu, _ = tex.generic_gemm(
        weight, True, x, False, None, None, None, None, DType.kFloat32, True, None, False, NO_WORKSPACE, 0,
        False, False,
    )  # fmt: skip
    torch.testing.assert_close(pre_gelu, x @ weight.T)
    torch.testing.assert_close(out, _tanh_gelu(x @ weight.T))

    # dgrad through the GELU: (grad @ W2) * GELU'(pre-activation)
    w2, grad = torch.randn(16, 48), torch.randn(6, 16)
    pre = pre_gelu.clone().requires_grad_()
    _tanh_gelu(pre).backward(grad @ w2)
    dgrad, _, _, _ = tex.generic_gemm(
        w2, False, grad, False, None, None, None, None, DType.kFloat32, True, pre_gelu, True, NO_WORKSPACE, 0,
        False, False,
    )  # fmt: skip
    torch.testing.assert_close(dgrad, pre.grad)


def test_gemm_bf16_rounds_once_from_fp32():
    weight, x = torch.randn(48, 32).bfloat16(), torch.randn(6, 32).bfloat16()
    out, _, _, _ = _gemm(weight, True, x, False)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (x.float() @ weight.float().T).bfloat16())


def test_gemm_refuses_quantizers_and_fp8_tensors():
    with pytest.raises(EmulationUnsupportedError, match="quantizers in generic_gemm"):
        tex.generic_gemm(
            torch.randn(4, 4), True, torch.randn(4, 4), False, None, object(), None, None, DType.kFloat32, False,
            None, False, NO_WORKSPACE, 0, False, False,
        )  # fmt: skip


def _rms_reference(x, weight, eps):
    # LlamaRMSNorm's math: normalise in fp32, multiply by the weight.
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


@pytest.mark.parametrize("zero_centered_gamma", [False, True])
def test_rmsnorm_forward_and_backward(zero_centered_gamma):
    x = torch.randn(3, 5, 64, requires_grad=True)
    weight = (torch.rand(64) + 0.5).requires_grad_()
    y, mu, rsigma = tex.rmsnorm_fwd(
        x.detach(), weight.detach(), 1e-5, None, None, DType.kFloat32, 0, zero_centered_gamma
    )

    effective = weight + 1 if zero_centered_gamma else weight
    expected = _rms_reference(x, effective, 1e-5)
    torch.testing.assert_close(y, expected.detach())
    assert mu is None and rsigma.shape == (15,) and rsigma.dtype == torch.float32

    grad = torch.randn_like(x)
    expected.backward(grad)
    dx, dgamma = tex.rmsnorm_bwd(grad, x.detach(), rsigma, weight.detach(), 0, zero_centered_gamma)
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dgamma, weight.grad)


def test_rmsnorm_bf16_multiplies_weight_in_fp32_before_rounding():
    x, weight = torch.randn(4, 64).bfloat16(), (torch.rand(64) + 0.5).bfloat16()
    y, _, _ = tex.rmsnorm_fwd(x, weight, 1e-6, None, None, DType.kBFloat16, 0, False)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, _rms_reference(x, weight, 1e-6).bfloat16())


@pytest.mark.parametrize("zero_centered_gamma", [False, True])
def test_layernorm_forward_and_backward(zero_centered_gamma):
    x = torch.randn(6, 32, requires_grad=True)
    weight, bias = torch.randn(32, requires_grad=True), torch.randn(32, requires_grad=True)
    y, mu, rsigma = tex.layernorm_fwd(
        x.detach(), weight.detach(), bias.detach(), 1e-5, None, None, DType.kFloat32, 0, zero_centered_gamma
    )
    expected = F.layer_norm(x, (32,), weight + 1 if zero_centered_gamma else weight, bias, eps=1e-5)
    torch.testing.assert_close(y, expected.detach())

    grad = torch.randn_like(x)
    expected.backward(grad)
    dx, dgamma, dbeta = tex.layernorm_bwd(grad, x.detach(), mu, rsigma, weight.detach(), 0, zero_centered_gamma)
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dgamma, weight.grad)
    torch.testing.assert_close(dbeta, bias.grad)


def _tanh_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _gated(inner):
    def fn(x):
        half = x.shape[-1] // 2
        return inner(x[..., :half]) * x[..., half:]

    return fn


ACTIVATION_REFERENCES = {
    "gelu": _tanh_gelu,
    "geglu": _gated(_tanh_gelu),
    "qgelu": lambda x: x / (1 + torch.exp(-1.702 * x)),
    "qgeglu": _gated(lambda x: x / (1 + torch.exp(-1.702 * x))),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "reglu": _gated(lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    "srelu": lambda x: torch.where(x > 0, x * x, torch.zeros_like(x)),
    "sreglu": _gated(lambda x: torch.where(x > 0, x * x, torch.zeros_like(x))),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "swiglu": _gated(lambda x: x / (1 + torch.exp(-x))),
    "glu": _gated(lambda x: 1 / (1 + torch.exp(-x))),
}


@pytest.mark.parametrize("name", sorted(ACTIVATION_REFERENCES))
def test_activation_forward_and_backward(name):
    x = torch.randn(4, 3, 32, requires_grad=True)
    expected = ACTIVATION_REFERENCES[name](x)
    torch.testing.assert_close(getattr(tex, name)(x.detach(), None), expected.detach())

    grad = torch.randn_like(expected)
    expected.backward(grad)
    torch.testing.assert_close(getattr(tex, f"d{name}")(grad, x.detach(), None), x.grad)


def test_clamped_swiglu_forward_and_backward():
    x = (torch.randn(5, 16) * 6).requires_grad_()
    gate, linear = x[:, :8].clamp(max=7.0), x[:, 8:].clamp(-7.0, 7.0)
    expected = gate * torch.sigmoid(1.702 * gate) * (linear + 1.0)
    torch.testing.assert_close(tex.clamped_swiglu(x.detach(), None), expected.detach())
    grad = torch.randn_like(expected)
    expected.backward(grad)
    torch.testing.assert_close(tex.clamped_dswiglu(grad, x.detach(), None), x.grad)


def test_swiglu_bf16_output_dtype():
    x = torch.randn(4, 32).bfloat16()
    out = tex.swiglu(x, None)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 16)


def _hf_rope(x_bshd, angles):
    # HF's own rope (rotate_half form) on [b, s, h, d] with per-token angles [b, s, d].
    cos, sin = angles.cos(), angles.sin()
    q, _ = apply_rotary_pos_emb(x_bshd.transpose(1, 2), x_bshd.transpose(1, 2), cos, sin)
    return q.transpose(1, 2)


def _angles(positions, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    freqs = positions.float()[..., None] * inv_freq
    return torch.cat((freqs, freqs), dim=-1)


def _te_freqs(max_positions, dim):
    return _angles(torch.arange(max_positions), dim)[:, None, None, :]


@pytest.mark.parametrize("tensor_format", ["bshd", "sbhd"])
def test_rope_matches_hf_rope_with_start_positions(tensor_format):
    x = torch.randn(2, 6, 3, 16, requires_grad=True)  # bshd
    start = torch.tensor([0, 4], dtype=torch.int32)
    positions = torch.arange(6)[None] + start[:, None].long()
    expected = _hf_rope(x, _angles(positions, 16))
    fmt = NVTE_QKV_Format.NVTE_BSHD if tensor_format == "bshd" else NVTE_QKV_Format.NVTE_SBHD
    t = x.detach() if tensor_format == "bshd" else x.detach().transpose(0, 1)

    out = tex.fused_rope_forward(t, _te_freqs(16, 16), start, fmt, False, None, 1, 0)
    out = out if tensor_format == "bshd" else out.transpose(0, 1)
    torch.testing.assert_close(out, expected.detach())

    grad = torch.randn_like(x)
    expected.backward(grad)
    g = grad if tensor_format == "bshd" else grad.transpose(0, 1)
    dx = tex.fused_rope_backward(g, _te_freqs(16, 16), start, fmt, False, None, 1, 0)
    torch.testing.assert_close(dx if tensor_format == "bshd" else dx.transpose(0, 1), x.grad)


def test_rope_thd_restarts_positions_per_sequence_and_rotates_only_rot_dim():
    lengths = [3, 5]
    x = torch.randn(sum(lengths), 2, 12)
    cu_seqlens = torch.tensor([0, 3, 8], dtype=torch.int32)
    out = tex.fused_rope_forward(x, _te_freqs(8, 8), None, NVTE_QKV_Format.NVTE_THD, False, cu_seqlens, 1, 0)

    for begin, length in zip([0, 3], lengths):
        segment = x[begin : begin + length][None]
        expected = _hf_rope(segment[..., :8], _angles(torch.arange(length)[None], 8))[0]
        torch.testing.assert_close(out[begin : begin + length, :, :8], expected)
    torch.testing.assert_close(out[..., 8:], x[..., 8:])


def test_rope_interleaved_rotates_adjacent_pairs():
    x = torch.randn(1, 4, 1, 8)
    positions = torch.arange(4)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    theta = positions[:, None].float() * inv_freq  # [s, d/2]
    freqs = theta.repeat_interleave(2, dim=-1)[:, None, None, :]
    out = tex.fused_rope_forward(x, freqs, None, NVTE_QKV_Format.NVTE_BSHD, True, None, 1, 0)

    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = theta.cos()[None, :, None, :], theta.sin()[None, :, None, :]
    expected = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    torch.testing.assert_close(out, expected)


def test_rope_refuses_context_parallelism_and_short_tables():
    x = torch.randn(1, 4, 1, 8)
    with pytest.raises(EmulationUnsupportedError, match="context-parallel"):
        tex.fused_rope_forward(x, _te_freqs(4, 8), None, NVTE_QKV_Format.NVTE_BSHD, False, None, 2, 0)
    with pytest.raises(ValueError, match="beyond the 3 rows"):
        tex.fused_rope_forward(x, _te_freqs(3, 8), None, NVTE_QKV_Format.NVTE_BSHD, False, None, 1, 0)


def _softmax_reference(logits, blocked):
    # Masked softmax with fully-blocked rows giving zeros (TE's kernels' convention).
    probs = torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def test_scaled_masked_softmax_forward_and_backward():
    x = torch.randn(2, 3, 4, 6, requires_grad=True)
    blocked = torch.rand(2, 1, 4, 6) > 0.6
    blocked[1, 0, 2] = True  # one fully masked row
    expected = _softmax_reference(x * 0.5, blocked.expand_as(x))
    out = tex.scaled_masked_softmax_forward(x.detach(), blocked.to(torch.uint8), 0.5)
    torch.testing.assert_close(out, expected.detach())
    assert torch.equal(out[1, :, 2], torch.zeros(3, 6))

    grad = torch.randn_like(x)
    expected.backward(grad)
    torch.testing.assert_close(tex.scaled_masked_softmax_backward(grad, out, 0.5), torch.nan_to_num(x.grad))


def test_scaled_softmax_and_causal_variants():
    x = torch.randn(2, 3, 4, 6, requires_grad=True)
    expected = torch.softmax(x * 0.25, dim=-1)
    out = tex.scaled_softmax_forward(x.detach(), 0.25)
    torch.testing.assert_close(out, expected.detach())
    grad = torch.randn_like(x)
    expected.backward(grad)
    torch.testing.assert_close(tex.scaled_softmax_backward(grad, out, 0.25), x.grad)

    top_left = torch.tensor([[j > i for j in range(6)] for i in range(4)])
    bottom_right = torch.tensor([[j > i + 2 for j in range(6)] for i in range(4)])
    flat = x.detach().reshape(6, 4, 6)
    torch.testing.assert_close(
        tex.scaled_upper_triang_masked_softmax_forward(flat, 1.0), _softmax_reference(flat, top_left.expand(6, 4, 6))
    )
    torch.testing.assert_close(
        tex.scaled_aligned_causal_masked_softmax_forward(x.detach(), 1.0),
        _softmax_reference(x.detach(), bottom_right.expand_as(x)),
    )


def test_copy_to_kv_cache_writes_new_tokens_after_cached_ones():
    k_cache, v_cache = torch.zeros(2, 6, 1, 4), torch.zeros(2, 6, 1, 4)
    new_k, new_v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    batch_indices = torch.tensor([0, 1], dtype=torch.int32)
    cu_new = torch.tensor([0, 2, 3], dtype=torch.int32)  # row 1 has a single new token
    cu_cached = torch.tensor([0, 4, 7], dtype=torch.int32)  # 4 and 3 tokens after the step
    tex.copy_to_kv_cache(
        new_k, new_v, k_cache, v_cache, batch_indices, cu_new, cu_cached, NVTE_QKV_Format.NVTE_BSHD, 2, 2, 6, 1, False
    )
    torch.testing.assert_close(k_cache[0, 2:4], new_k[0])
    torch.testing.assert_close(v_cache[1, 2:3], new_v[1, :1])
    assert k_cache[0, :2].abs().sum() == 0 and k_cache[1, 3:].abs().sum() == 0


def test_copy_to_kv_cache_paged():
    # Two pages of 3 tokens per sequence; sequence 0 owns pages [2, 0], sequence 1 pages [1, 3].
    k_cache, v_cache = torch.zeros(4, 3, 1, 2), torch.zeros(4, 3, 1, 2)
    page_table = torch.tensor([[2, 0], [1, 3]], dtype=torch.int32)
    new_k = torch.randn(2, 5, 1, 2)
    cu_new = torch.tensor([0, 5, 7], dtype=torch.int32)
    cu_cached = torch.tensor([0, 5, 10], dtype=torch.int32)  # sequence 1: 3 cached tokens, then 2 new
    tex.copy_to_kv_cache(
        new_k, new_k, k_cache, v_cache, page_table, cu_new, cu_cached, NVTE_QKV_Format.NVTE_BSHD, 2, 5, 6, 2, False
    )
    torch.testing.assert_close(k_cache[2], new_k[0, :3])
    torch.testing.assert_close(k_cache[0, :2], new_k[0, 3:5])
    torch.testing.assert_close(k_cache[3, :2], new_k[1, :2])
    assert k_cache[1].abs().sum() == 0


def test_copy_to_kv_cache_reindexes_surviving_sequences_first():
    k_cache = torch.arange(3 * 4, dtype=torch.float32).view(3, 4, 1, 1).clone()
    v_cache = k_cache.clone()
    # Sequence 0 finished: the survivors (old rows 1, 2) move to rows 0, 1 before one new token each is written.
    batch_indices = torch.tensor([1, 2, 0], dtype=torch.int32)
    cu_new = torch.tensor([0, 1, 2], dtype=torch.int32)
    cu_cached = torch.tensor([0, 3, 6], dtype=torch.int32)
    old = k_cache.clone()
    new = torch.full((2, 1, 1, 1), -1.0)
    tex.copy_to_kv_cache(
        new, new, k_cache, v_cache, batch_indices, cu_new, cu_cached, NVTE_QKV_Format.NVTE_BSHD, 2, 1, 4, 1, True
    )
    torch.testing.assert_close(k_cache[0, :2], old[1, :2])
    torch.testing.assert_close(k_cache[1, :2], old[2, :2])
    assert k_cache[0, 2].item() == -1.0 and k_cache[1, 2].item() == -1.0


def test_bshd_thd_conversions_round_trip():
    x = torch.randn(2, 5, 3, 4)
    cu_seqlens = torch.tensor([0, 2, 7], dtype=torch.int32)
    packed = tex.convert_bshd_to_thd(x, cu_seqlens, 7)
    torch.testing.assert_close(packed[:2], x[0, :2])
    torch.testing.assert_close(packed[2:], x[1])
    unpacked = tex.convert_thd_to_bshd(packed, cu_seqlens, 2, 5)
    torch.testing.assert_close(unpacked[0, :2], x[0, :2])
    assert unpacked[0, 2:].abs().sum() == 0


def test_fused_attention_is_always_rejected():
    backend, reason = tex.get_fused_attn_backend(object())
    assert backend == NVTE_Fused_Attn_Backend.NVTE_No_Backend and "cuDNN" in reason


def test_unprovided_names_raise_when_called():
    assert "multi_tensor_adam" in tex.__all__
    with pytest.raises(EmulationUnsupportedError, match="multi_tensor_adam is not implemented"):
        tex.multi_tensor_adam(1, 2)
    with pytest.raises(AttributeError, match="no attribute 'not_a_te_kernel'"):
        tex.not_a_te_kernel  # noqa: B018
    with pytest.raises(EmulationUnsupportedError, match="communication overlap"):
        tex.CommOverlap()
    meta = tex.FP8TensorMeta()
    assert (meta.scale, meta.scale_inv, meta.amax_history) == (None, None, None)


def test_every_implemented_kernel_is_a_te_2_20_2_name():
    assert set(extension.IMPLEMENTED) <= set(extension.EXTENSION_FUNCTIONS)
    assert len(extension.EXTENSION_FUNCTIONS) == 179


def test_wrong_te_version_is_refused(monkeypatch):
    monkeypatch.setattr(emulation, "installed_te_version", lambda: "2.19.0")
    with pytest.raises(emulation.TEVersionError, match=r"transformer-engine==2\.20\.2, found 2\.19\.0"):
        emulation.check_te_version()


def test_emulation_patches_are_scoped_and_restored(te_runtime):
    if not te_runtime.emulated:
        pytest.skip("real TE: no emulation to scope")
    saved = (
        torch.cuda.is_available,
        torch.range,
        torch.Tensor.cuda,
        torch.autograd._engine_run_backward,
        os.environ.get("NVTE_TORCH_COMPILE"),
    )
    x = torch.randn(1, 2, 1, 1)
    cu_seqlens = torch.tensor([0, 2], dtype=torch.int32)
    with te_runtime.active() as te:
        assert torch.cuda.is_available() and torch.cuda.get_device_capability() == (8, 0)
        assert torch.zeros(2, device="cuda").device.type == "cpu" and x.is_cuda and x.cuda() is x
        assert x.to(0).device.type == "cpu" and x.to("cuda:0", torch.float64).dtype == torch.float64
        assert torch.ops.te_kv_cache.convert_bshd_to_thd(x, cu_seqlens, 2).shape == (2, 1, 1)
        with te_runtime.active():  # re-entrant
            assert torch.cuda.is_available()
        assert torch.cuda.is_available()
        linear_cls = te.Linear
    assert (
        torch.cuda.is_available,
        torch.range,
        torch.Tensor.cuda,
        torch.autograd._engine_run_backward,
        os.environ.get("NVTE_TORCH_COMPILE"),
    ) == saved
    assert not torch.cuda.is_available() and not x.is_cuda
    assert getattr(sys.modules.get("triton"), "jit", None) is not triton_standin._jit
    with pytest.raises(NotImplementedError):
        torch.ops.te_kv_cache.convert_bshd_to_thd(x, cu_seqlens, 2)
    with pytest.raises(RuntimeError, match="CUDA"):
        linear_cls(8, 8)


def test_stock_hf_generate_is_unchanged_inside_the_scope(te_runtime):
    # Mixed models run stock layers inside `active()` too: the emulation must not change what they compute.
    config = LlamaConfig(
        hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        vocab_size=50,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().to(te_runtime.device)
    ids = torch.randint(0, 50, (2, 5), device=te_runtime.device)
    mask = torch.ones_like(ids)
    outside = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, num_beams=2)
    with te_runtime.active():
        inside = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, num_beams=2)
    assert torch.equal(inside, outside)


def test_cuda_without_real_te_is_a_clear_error(monkeypatch):
    # With CUDA the tests run real TE; the pure-Python wheel alone cannot import there (no core library).
    def import_module(name):
        raise RuntimeError("Found empty `transformer-engine` meta package installed.")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    monkeypatch.setattr(runtime, "importlib", types.SimpleNamespace(import_module=import_module))
    with pytest.raises(RuntimeError, match=r"real TransformerEngine, which failed to import .*CUDA_VISIBLE_DEVICES="):
        runtime.import_transformer_engine()


def test_real_te_needs_tf32_off(monkeypatch):
    # The tests' fp32 tolerances assume fp32 GEMMs; cuBLAS may run them in TF32 unless NVIDIA_TF32_OVERRIDE=0.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    with pytest.raises(
        RuntimeError, match=r"with NVIDIA_TF32_OVERRIDE=None cuBLAS may run fp32 GEMMs in TF32\. .*make gpu"
    ):
        runtime.import_transformer_engine()
