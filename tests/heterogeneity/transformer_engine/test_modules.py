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
"""TE's real modules (run by `te_runtime`: emulated on the CPU, or real TE on a GPU) against stock HF Llama modules.

The references are stock `LlamaDecoderLayer` / `LlamaMLP` / `LlamaRMSNorm` / `nn.Linear` holding the same weights
(the `te_llama` example's mapping, `hf_reference.py`), never the code under test.
"""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from .hf_reference import (
    causal_mask,
    hf_forward,
    hf_layer,
    hf_to_te_state_dict,
    load_te_weights,
    rope_tables,
    te_transformer_layer,
    tiny_llama_config,
)


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}
FP32_ATOL = 1e-5


def _build_te_layer(te_runtime, config, hf, dtype=torch.float32, **kwargs):
    with te_runtime.active():
        layer = te_transformer_layer(te_runtime.te, config, dtype, **kwargs).to(te_runtime.device)
        load_te_weights(layer, hf_to_te_state_dict(hf))
    return layer


def _te_forward(te_runtime, layer, x, emb, **kwargs):
    with te_runtime.active():
        return layer(x.to(te_runtime.device), rotary_pos_emb=emb.to(te_runtime.device), **kwargs).cpu()


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE], ids=["default_rope", "llama3_rope"])
def test_transformer_layer_matches_llama_layer_fp32(te_runtime, rope):
    config = tiny_llama_config(**({"rope_parameters": rope} if rope else {}))
    hf = hf_layer(config)
    x = torch.randn(2, 12, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf)
    _, _, emb = rope_tables(config, x.shape[1])

    out = _te_forward(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    expected = hf_forward(hf, config, x)
    torch.testing.assert_close(out, expected, atol=FP32_ATOL, rtol=0)


def test_llama3_rope_is_not_the_default_rope():
    # Control for the test above: llama3 scaling changes HF's angles at these positions, so feeding TE HF's own
    # `inv_freq` is what makes the llama3 case pass.
    _, _, default = rope_tables(tiny_llama_config(), 12)
    _, _, scaled = rope_tables(tiny_llama_config(rope_parameters=LLAMA3_ROPE), 12)
    assert (default - scaled).abs().max() > 0.1


def test_swapped_gate_and_up_weights_are_detected(te_runtime):
    # Control: the comparison fails for a wrong weight mapping (TE's swiglu gates the first half of fc1).
    config = tiny_llama_config()
    hf = hf_layer(config)
    x = torch.randn(1, 6, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf)
    with torch.no_grad():
        layer.layernorm_mlp.fc1_weight.copy_(torch.cat((hf.mlp.up_proj.weight, hf.mlp.gate_proj.weight)))
    _, _, emb = rope_tables(config, x.shape[1])

    out = _te_forward(te_runtime, layer, x, emb, self_attn_mask_type="causal")

    assert (out - hf_forward(hf, config, x)).abs().max() > 1e-2


def test_transformer_layer_matches_llama_layer_bf16(te_runtime):
    config = tiny_llama_config()
    hf32 = hf_layer(config)
    hf16 = hf_layer(config, dtype=torch.bfloat16)
    x = torch.randn(2, 12, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf16, dtype=torch.bfloat16)
    _, _, emb = rope_tables(config, x.shape[1])

    out = _te_forward(te_runtime, layer, x.bfloat16(), emb, self_attn_mask_type="causal").float()

    exact = hf_forward(hf32, config, x)
    hf_bf16_error = (hf_forward(hf16, config, x.bfloat16()).float() - exact).abs().max()
    te_bf16_error = (out - exact).abs().max()
    assert out.dtype == torch.float32 and layer.layernorm_mlp.fc1_weight.dtype == torch.bfloat16
    assert te_bf16_error <= 2 * hf_bf16_error, (te_bf16_error, hf_bf16_error)


def test_transformer_layer_gradients_match_llama_layer(te_runtime):
    config = tiny_llama_config()
    hf = hf_layer(config)
    x = torch.randn(2, 10, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf)
    _, _, emb = rope_tables(config, x.shape[1])
    grad_out = torch.randn_like(x)

    x_te = x.clone().to(te_runtime.device).requires_grad_()
    with te_runtime.active():
        out = layer(x_te, self_attn_mask_type="causal", rotary_pos_emb=emb.to(te_runtime.device))
        out.backward(grad_out.to(te_runtime.device))
    x_hf = x.clone().requires_grad_()
    hf_forward(hf, config, x_hf).backward(grad_out)

    torch.testing.assert_close(x_te.grad.cpu(), x_hf.grad, atol=FP32_ATOL, rtol=1e-5)
    te_params = dict(layer.named_parameters())
    hf_grads = {
        name: weight.grad
        for name, weight in hf_to_te_state_dict(hf).items()
        if name != "layernorm_mlp.fc1_weight"  # a concatenation: no grad of its own
    }
    hf_grads["layernorm_mlp.fc1_weight"] = torch.cat((hf.mlp.gate_proj.weight.grad, hf.mlp.up_proj.weight.grad))
    assert sorted(hf_grads) == sorted(te_params)
    for name, expected in hf_grads.items():
        torch.testing.assert_close(te_params[name].grad.cpu(), expected, atol=5e-5, rtol=1e-5, msg=name)


def test_prefill_then_decode_through_inference_params_matches_full_forward(te_runtime):
    config = tiny_llama_config(rope_parameters=LLAMA3_ROPE)
    hf = hf_layer(config)
    batch, prompt, total = 2, 5, 9
    x = torch.randn(batch, total, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf, layer_number=3)
    _, _, emb = rope_tables(config, total)
    te = te_runtime.te

    outputs = []
    with te_runtime.active():
        cache = te.InferenceParams(
            max_batch_size=batch,
            max_sequence_length=total,
            num_heads_kv=config.num_key_value_heads,
            head_dim_k=config.head_dim,
            dtype=torch.float32,
            qkv_format="bshd",
        )
        steps = [(0, prompt)] + [(t, t + 1) for t in range(prompt, total)]
        for begin, end in steps:
            cache.pre_step(OrderedDict((seq, end - begin) for seq in range(batch)))
            step_out = layer(
                x[:, begin:end].to(te_runtime.device),
                self_attn_mask_type="padding_causal",
                inference_params=cache,
                rotary_pos_emb=emb.to(te_runtime.device),
            )
            outputs.append(step_out.cpu())
    decoded = torch.cat(outputs, dim=1)

    torch.testing.assert_close(decoded, hf_forward(hf, config, x), atol=FP32_ATOL, rtol=0)


def _rms_norm(config, weight):
    norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


def _check_against_reference(te_runtime, build_te, reference, weights, x, reference_grads=None):
    """Builds a TE module holding `weights` (TE name -> reference tensor), runs it and `reference` on `x`, and
    compares outputs, input gradients and the gradient of every TE parameter with the reference's
    (`reference_grads()` after backward, by default each reference weight's own gradient)."""
    with te_runtime.active():
        te_module = build_te(te_runtime.te).to(te_runtime.device)
        load_te_weights(te_module, weights)
    x_te = x.clone().to(te_runtime.device).requires_grad_()
    with te_runtime.active():
        out = te_module(x_te)
        out.square().sum().backward()
    x_ref = x.clone().requires_grad_()
    expected = reference(x_ref)
    expected.square().sum().backward()

    torch.testing.assert_close(out.detach().cpu(), expected.detach(), atol=FP32_ATOL, rtol=0)
    torch.testing.assert_close(x_te.grad.cpu(), x_ref.grad, atol=FP32_ATOL, rtol=1e-5)
    expected_grads = reference_grads() if reference_grads else {name: w.grad for name, w in weights.items()}
    te_params = dict(te_module.named_parameters())
    assert sorted(expected_grads) == sorted(te_params)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(te_params[name].grad.cpu(), grad, atol=5e-5, rtol=1e-5, msg=name)


def test_layernorm_mlp_matches_llama_norm_and_mlp(te_runtime):
    config = tiny_llama_config()
    hf = hf_layer(config)
    norm, mlp = _rms_norm(config, hf.post_attention_layernorm.weight), hf.mlp
    assert isinstance(mlp, LlamaMLP)

    def build(te):
        return te.LayerNormMLP(
            config.hidden_size,
            config.intermediate_size,
            eps=config.rms_norm_eps,
            bias=False,
            normalization="RMSNorm",
            activation="swiglu",
            params_dtype=torch.float32,
        )

    def grads():
        return {
            "layer_norm_weight": norm.weight.grad,
            "fc1_weight": torch.cat((mlp.gate_proj.weight.grad, mlp.up_proj.weight.grad)),
            "fc2_weight": mlp.down_proj.weight.grad,
        }

    fc1 = torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))
    weights = {"layer_norm_weight": norm.weight, "fc1_weight": fc1, "fc2_weight": mlp.down_proj.weight}
    x = torch.randn(3, 4, config.hidden_size)
    _check_against_reference(te_runtime, build, lambda x: mlp(norm(x)), weights, x, reference_grads=grads)


def test_layernorm_linear_matches_rms_norm_then_linear(te_runtime):
    config = tiny_llama_config()
    torch.manual_seed(1)
    norm = _rms_norm(config, torch.rand(config.hidden_size) + 0.5)
    linear = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def build(te):
        return te.LayerNormLinear(
            config.hidden_size,
            config.hidden_size,
            eps=config.rms_norm_eps,
            bias=False,
            normalization="RMSNorm",
            params_dtype=torch.float32,
        )

    weights = {"layer_norm_weight": norm.weight, "weight": linear.weight}
    _check_against_reference(
        te_runtime, build, lambda x: linear(norm(x)), weights, torch.randn(2, 5, config.hidden_size)
    )


def test_linear_with_bias_matches_nn_linear(te_runtime):
    torch.manual_seed(2)
    linear = nn.Linear(32, 48)

    def build(te):
        return te.Linear(32, 48, bias=True, params_dtype=torch.float32)

    weights = {"weight": linear.weight, "bias": linear.bias}
    _check_against_reference(te_runtime, build, linear, weights, torch.randn(3, 7, 32))


def test_padding_mask_in_te_convention_matches_hf_mask(te_runtime):
    # TE's boolean mask is True where attention is blocked (HF's is the opposite); a right-padded row must give the
    # HF layer's output on its real tokens.
    config = tiny_llama_config()
    hf = hf_layer(config)
    x = torch.randn(2, 8, config.hidden_size)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[1, 5:] = False
    layer = _build_te_layer(te_runtime, config, hf)
    _, _, emb = rope_tables(config, x.shape[1])
    te_mask = ~keep[:, None, None, :]

    out = _te_forward(
        te_runtime,
        layer,
        x,
        emb,
        self_attn_mask_type="padding_causal",
        attention_mask=te_mask.to(te_runtime.device),
    )

    cos, sin, _ = rope_tables(config, x.shape[1])
    hf_mask = causal_mask(8, x.dtype).masked_fill(~keep[:, None, None, :], torch.finfo(x.dtype).min)
    expected = hf(x, attention_mask=hf_mask, position_embeddings=(cos, sin))
    expected = expected[0] if isinstance(expected, tuple) else expected
    torch.testing.assert_close(out[keep], expected[keep], atol=FP32_ATOL, rtol=0)


def test_multihead_attention_matches_llama_norm_and_attention(te_runtime):
    # The attention block alone (what a layer with a skipped MLP needs): norm + attention, no residual.
    config = tiny_llama_config()
    hf = hf_layer(config)
    norm = _rms_norm(config, hf.input_layernorm.weight)
    x = torch.randn(2, 9, config.hidden_size)
    with te_runtime.active():
        attention = te_runtime.te.MultiheadAttention(
            config.hidden_size,
            config.num_attention_heads,
            kv_channels=config.head_dim,
            num_gqa_groups=config.num_key_value_heads,
            attention_dropout=0.0,
            layernorm_epsilon=config.rms_norm_eps,
            input_layernorm=True,
            normalization="RMSNorm",
            bias=False,
            qkv_format="bshd",
            layer_number=2,
            params_dtype=torch.float32,
        ).to(te_runtime.device)
        weights = {
            name.removeprefix("self_attention."): value
            for name, value in hf_to_te_state_dict(hf).items()
            if name.startswith("self_attention.")
        }
        load_te_weights(attention, weights)
    cos, sin, emb = rope_tables(config, x.shape[1])

    out = _te_forward(te_runtime, attention, x, emb, attn_mask_type="causal")

    expected, _ = hf.self_attn(
        norm(x), attention_mask=causal_mask(x.shape[1], x.dtype), position_embeddings=(cos, sin)
    )
    torch.testing.assert_close(out, expected, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_activation_checkpointing_recomputes_te_forward_in_backward(te_runtime, use_reentrant):
    # Checkpointing reruns TE's forward inside the backward pass, which must see the same (emulated) CUDA.
    config = tiny_llama_config()
    hf = hf_layer(config)
    x = torch.randn(2, 6, config.hidden_size)
    layer = _build_te_layer(te_runtime, config, hf)
    _, _, emb = rope_tables(config, x.shape[1])
    emb = emb.to(te_runtime.device)

    x_te = x.clone().to(te_runtime.device).requires_grad_()
    with te_runtime.active():
        out = torch.utils.checkpoint.checkpoint(
            lambda t: layer(t, self_attn_mask_type="causal", rotary_pos_emb=emb), x_te, use_reentrant=use_reentrant
        )
        out.square().sum().backward()
    x_hf = x.clone().requires_grad_()
    hf_forward(hf, config, x_hf).square().sum().backward()

    torch.testing.assert_close(x_te.grad.cpu(), x_hf.grad, atol=FP32_ATOL, rtol=1e-5)
    torch.testing.assert_close(
        layer.layernorm_mlp.fc2_weight.grad.cpu(), hf.mlp.down_proj.weight.grad, atol=5e-5, rtol=1e-5
    )
