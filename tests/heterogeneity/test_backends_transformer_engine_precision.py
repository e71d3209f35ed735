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
"""How TE layers run their matrix products: the model's recipe (built once), what FP8 recipes need of the shapes, and
token rows padded for FP8.

TE runs for real (emulated on a CPU, where TE itself refuses FP8: compute capability 8.0; real on a GPU). The FP8
numerics need a GPU with FP8 and are skipped elsewhere; everything decided before a GEMM runs is tested everywhere.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from transformers import AutoModelForCausalLM
from transformers.heterogeneity.backends import DecoderBackendError, TransformerEngineBackend
from transformers.heterogeneity.backends.transformer_engine import TransformerEngineDecoderLayer
from transformers.heterogeneity.backends.transformer_engine_precision import pad_tokens

from .conftest import ARCHS, build_config, build_model, make_input_ids
from .test_backends_transformer_engine import load_with_te
from .transformer_engine import fixtures


te_runtime = fixtures.te_runtime


@pytest.fixture(autouse=True)
def _threads(single_thread):
    """Tiny matrices: one intra-op thread (see conftest)."""


def fp8_available(te_runtime) -> bool:
    with te_runtime.active():
        return te_runtime.te.is_fp8_available()


def recipe(te_runtime, name: str):
    return getattr(importlib.import_module("transformer_engine.common.recipe"), name)()


@pytest.fixture
def default_recipes_built(te_runtime, monkeypatch) -> list[object]:
    """Every recipe TE's `get_default_fp8_recipe` builds (TE 2.20.2 `pytorch/quantization.py`; `autocast` calls it on
    each entry given `recipe=None`)."""
    quantization = importlib.import_module("transformer_engine.pytorch.quantization")
    original = quantization.get_default_fp8_recipe
    built = []

    def recording():
        built.append(original())
        return built[-1]

    monkeypatch.setattr(quantization, "get_default_fp8_recipe", recording)
    return built


def test_recipe_is_built_once_per_model(te_runtime, default_recipes_built, tmp_path):
    stock = build_model(ARCHS["llama"], None, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend="transformer_engine")
    assert len(default_recipes_built) == 1  # at construction
    input_ids = make_input_ids(seq_len=5).to(te_runtime.device)
    with te_runtime.active():
        model(input_ids)
        model.generate(input_ids, max_new_tokens=3, do_sample=False)
    assert len(default_recipes_built) == 1  # none per forward, layer or decoding step
    recipes = {id(layer.precision.recipe) for layer in model.model.layers}
    assert recipes == {id(default_recipes_built[0])}


def test_mxfp8_refuses_layers_not_aligned_to_32(te_runtime):
    """MXFP8 (TE's default recipe on Blackwell) needs 32, not 16: layer 1's down projection is 64 x 48. The refusal
    names the layer, the GEMM, the recipe and its alignment, before any device check."""
    config = build_config(ARCHS["llama"], {1: {"intermediate_size": 48}}, 3, intermediate_size=64)
    backend = TransformerEngineBackend(fp8=recipe(te_runtime, "MXFP8BlockScaling"))
    with te_runtime.active(), pytest.raises(DecoderBackendError) as error:
        AutoModelForCausalLM.from_config(config, decoder_backend=backend)
    assert str(error.value) == (
        "Layer 1: decoder_backend asks for FP8 with recipe MXFP8BlockScaling, which needs every GEMM dimension "
        "divisible by 32: fc2 weight is 64x48, not divisible by 32. TransformerEngineBackend(layers='fp8_compatible', "
        "fp8=...) keeps such layers stock; or leave this layer out of `layers`."
    )


def test_per_tensor_fp8_takes_layers_aligned_to_16(te_runtime):
    """The same layer passes the alignment check of DelayedScaling (16): on a device without FP8 the refusal is the
    device's, for the first FP8 layer."""
    if fp8_available(te_runtime):
        pytest.skip("this device runs FP8 (see test_fp8_layers)")
    config = build_config(ARCHS["llama"], {1: {"intermediate_size": 48}}, 3, intermediate_size=64)
    backend = TransformerEngineBackend(fp8=recipe(te_runtime, "DelayedScaling"))
    with te_runtime.active(), pytest.raises(DecoderBackendError) as error:
        AutoModelForCausalLM.from_config(config, decoder_backend=backend)
    assert str(error.value).startswith(
        "Layer 0: decoder_backend asks for FP8 with recipe DelayedScaling, which this device cannot run (Device "
        "compute capability 8.9 or higher required for FP8 execution.)"
    )


def test_fp8_on_layers_not_aligned_to_16_is_refused(te_runtime):
    config = build_config(ARCHS["llama"], {1: {"intermediate_size": 40}}, 3, intermediate_size=64)
    with te_runtime.active(), pytest.raises(DecoderBackendError, match=r"^Layer 1: .* fc2 weight is 64x40, not div"):
        AutoModelForCausalLM.from_config(config, decoder_backend=TransformerEngineBackend(fp8=True))


def test_fp8_where_the_device_cannot_run_it(te_runtime):
    if fp8_available(te_runtime):
        pytest.skip("this device runs FP8 (see test_fp8_layers for the GPU check)")
    config = build_config(ARCHS["llama"], None, 2)
    with te_runtime.active(), pytest.raises(DecoderBackendError, match="Layer 0: decoder_backend asks for FP8"):
        AutoModelForCausalLM.from_config(config, decoder_backend=TransformerEngineBackend(fp8=True))


def test_pad_tokens_feeds_aligned_rows(te_runtime):
    """A decode step of 3 sequences is 3 token rows; FP8 GEMMs need a multiple of 8 (TE 2.20.2 `pytorch/utils.py`
    `assert_dim_for_fp8_exec`). The TE module gets 16 rows, the caller the 3 real rows' results, gradients included."""
    te = te_runtime.te
    with te_runtime.active():
        module = te.LayerNormMLP(64, 96, normalization="RMSNorm", activation="swiglu", bias=False).to(
            te_runtime.device
        )
        rows = []
        module.register_forward_pre_hook(lambda _, args: rows.append(tuple(args[0].shape)))
        hidden_states = torch.randn(3, 1, 64, device=te_runtime.device, requires_grad=True)
        padded = pad_tokens(module, hidden_states, 16)
        padded.sum().backward()
        padded_gradient, hidden_states.grad = hidden_states.grad, None
        expected = module(hidden_states)
        expected.sum().backward()
        pad_tokens(module, torch.randn(2, 8, 64, device=te_runtime.device), 16)  # aligned already: as given
        pad_tokens(module, hidden_states, 1)  # no alignment asked for: as given
    assert rows == [(16, 64), (3, 1, 64), (2, 8, 64), (3, 1, 64)]
    assert padded.shape == expected.shape == (3, 1, 64)
    torch.testing.assert_close(padded, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(padded_gradient, hidden_states.grad, atol=1e-6, rtol=1e-6)


def test_fp8_layers(te_runtime, tmp_path):
    """FP8 per layer, where the device has it: `fp8_compatible` keeps a layer FP8 cannot run stock; every call of an
    FP8 layer runs in FP8, a decode step of 3 sequences included (padded to the recipe's alignment)."""
    if not fp8_available(te_runtime):
        pytest.skip("FP8 needs a GPU with FP8 (compute capability 8.9+)")
    per_layer = {1: {"intermediate_size": 40}}  # fc2 is 64 x 40: no recipe runs it
    stock = build_model(ARCHS["llama"], per_layer, 3, attn_implementation="sdpa").to(te_runtime.device)
    fp8 = TransformerEngineBackend(layers="fp8_compatible", fp8=True)
    model = load_with_te(stock, tmp_path / "fp8", te_runtime, decoder_backend=fp8)
    unquantized = load_with_te(stock, tmp_path / "te", te_runtime, decoder_backend={"transformer_engine": [0, 2]})
    layers = model.model.layers
    assert [layer.backend for layer in (layers[0], layers[2])] == ["transformer_engine (fp8)"] * 2
    assert not isinstance(layers[1], TransformerEngineDecoderLayer)
    for input_ids in (make_input_ids(batch_size=2, seq_len=8), make_input_ids(batch_size=3, seq_len=1)):
        input_ids = input_ids.to(te_runtime.device)
        with te_runtime.active(), torch.no_grad():
            expected = stock(input_ids).logits
            logits = model(input_ids).logits
            without_fp8 = unquantized(input_ids).logits
        assert (logits - expected).abs().max() < 0.1 * expected.abs().max()
        assert not torch.equal(logits, without_fp8)  # quantized, not silently run in the model's dtype
