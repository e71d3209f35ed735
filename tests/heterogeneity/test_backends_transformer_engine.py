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
"""The TransformerEngine decoder backend against stock HF layers holding the same weights.

TE runs for real: on a CPU machine its Python code runs over the stand-in extension (`transformer_engine/`), on a
CUDA machine the same tests run against real TE (`make gpu-check`). The reference is always the stock model the
weights come from, built by the stock class constructor; the TE model is loaded from that model's checkpoint with
`from_pretrained(..., decoder_backend=...)`, so every test also goes through the HF -> TE weight mapping.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModelForCausalLM, DynamicCache
from transformers.heterogeneity.backends import DecoderBackendError, TransformerEngineBackend, use_decoder_backend
from transformers.heterogeneity.backends.transformer_engine import (
    TransformerEngineAttention,
    TransformerEngineDecoderLayer,
    TransformerEngineUnavailableError,
    _te_mask,
    build_transformer_engine_layers,
)

from .conftest import ARCHS, assert_cached_steps_match, build_config, build_model, make_input_ids
from .transformer_engine import fixtures
from .transformer_engine.hf_reference import hf_to_te_state_dict, load_te_weights


te_runtime = fixtures.te_runtime  # the TE of this machine (real with CUDA, emulated on the CPU)


# A heterogeneous 3-layer model: layer 1 has its own FFN width and KV heads (and stays stock where TE runs [0, 2]).
PER_LAYER = {1: {"intermediate_size": 64, "num_key_value_heads": 1}}
MIXED = {"transformer_engine": [0, 2]}
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _threads(single_thread):
    """Tiny matrices: one intra-op thread (see conftest)."""


def load_with_te(stock, tmp_path, te_runtime, decoder_backend=MIXED, **kwargs):
    """The TE model holding `stock`'s weights: saved by the stock model, loaded through the TE weight mapping."""
    stock.save_pretrained(tmp_path / "stock")
    with te_runtime.active():
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "stock", decoder_backend=decoder_backend, **kwargs)
    return model.to(te_runtime.device).eval()


def padded_batch(device, seq_len=9):
    """Two prompts, the first left-padded by three tokens (as `generate` gets them from a tokenizer)."""
    input_ids = make_input_ids(batch_size=2, seq_len=seq_len).to(device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0
    return input_ids, attention_mask


def assert_padded_batch_matches(stock, model, te_runtime, seq_len=9):
    """Logits of a left-padded batch (where not padded) and greedy continuations equal the stock model's."""
    input_ids, attention_mask = padded_batch(te_runtime.device, seq_len)
    with te_runtime.active(), torch.no_grad():
        expected = stock(input_ids, attention_mask=attention_mask).logits
        logits = model(input_ids, attention_mask=attention_mask).logits
        valid = attention_mask.bool()  # padded positions compute nothing anyone reads
        torch.testing.assert_close(logits[valid], expected[valid], atol=ATOL, rtol=ATOL)
        generated = [
            candidate.generate(input_ids, attention_mask=attention_mask, max_new_tokens=5, do_sample=False)
            for candidate in (stock, model)
        ]
    assert torch.equal(*generated)


def te_layer_indices(model) -> list[int]:
    return [i for i, layer in enumerate(model.model.layers) if isinstance(layer, TransformerEngineDecoderLayer)]


def test_logits_match_stock_layers(arch, te_runtime, tmp_path):
    stock = build_model(arch, PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime)
    assert te_layer_indices(model) == [0, 2]
    input_ids, attention_mask = padded_batch(te_runtime.device)
    with te_runtime.active(), torch.no_grad():
        expected = stock(input_ids).logits
        torch.testing.assert_close(model(input_ids).logits, expected, atol=ATOL, rtol=ATOL)
        expected = stock(input_ids, attention_mask=attention_mask).logits
        logits = model(input_ids, attention_mask=attention_mask).logits
    valid = attention_mask.bool()  # padded positions compute nothing anyone reads
    torch.testing.assert_close(logits[valid], expected[valid], atol=ATOL, rtol=ATOL)


def test_eager_masks_and_own_head_dim(te_runtime, tmp_path):
    """Eager attention gives additive float masks; layer 0's own `head_dim` (TE's `kv_channels`) comes with its own
    rotary embedding."""
    per_layer = {0: {"head_dim": 32}, 1: {"num_key_value_heads": 4}}
    stock = build_model(ARCHS["llama"], per_layer, 2, attn_implementation="eager").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend="transformer_engine")
    assert model.model.layers[0].self_attention.core_attention.hidden_size_per_attention_head_k == 32
    assert_padded_batch_matches(stock, model, te_runtime)


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": 4},
        # yarn scales cos/sin by `attention_scaling` (about 1.07 here), which TE's own rope cannot express.
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0, "original_max_position_embeddings": 4},
    ],
    ids=["llama3", "yarn"],
)  # fmt: skip
def test_scaled_rope_matches(rope_parameters, te_runtime, tmp_path):
    stock = build_model(ARCHS["llama"], None, 2, attn_implementation="sdpa", rope_parameters=rope_parameters)
    stock = stock.to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend="transformer_engine")
    input_ids = make_input_ids(seq_len=12).to(te_runtime.device)
    with te_runtime.active(), torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, stock(input_ids).logits, atol=ATOL, rtol=ATOL)


def test_generate_is_token_identical(te_runtime, tmp_path):
    stock = build_model(ARCHS["llama"], PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime)
    input_ids, attention_mask = padded_batch(te_runtime.device)
    settings = [
        {"do_sample": False},
        {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
        {"do_sample": True, "top_k": 5},
        {"do_sample": False, "cache_implementation": "static"},
    ]
    for generation_kwargs in settings:
        outputs = []
        for candidate in (stock, model):
            torch.manual_seed(0)
            with te_runtime.active():
                outputs.append(
                    candidate.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, **generation_kwargs)
                )
        assert torch.equal(outputs[0], outputs[1]), generation_kwargs


def test_cache_with_a_te_layer_first(te_runtime, tmp_path):
    """Layer 0 on TE: HF's cache answers for the sequence length, and cached decoding equals a full recompute."""
    stock = build_model(ARCHS["qwen3"], PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend={"transformer_engine": [0]})
    input_ids = make_input_ids(seq_len=8).to(te_runtime.device)
    with te_runtime.active(), torch.no_grad():
        expected = stock(input_ids).logits
        cache = DynamicCache(config=model.config)
        assert_cached_steps_match(model, input_ids, 5, cache, expected)
        assert cache.get_seq_length(0) == 8


def test_per_layer_windows(te_runtime, tmp_path):
    """Mistral with its own window per layer: the TE layers attend through the layers' own masks."""
    per_layer = {0: {"sliding_window": 3}, 2: {"sliding_window": 5}}
    stock = build_model(ARCHS["mistral"], per_layer, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend="transformer_engine")
    assert_padded_batch_matches(stock, model, te_runtime, seq_len=10)


def test_per_layer_windows_without_masks(te_runtime, tmp_path):
    """Given no mask (`None`: causal, nothing padded, as flash-style mask functions give it, or a caller's mapping by
    layer type), each TE layer attends within its own window through TE's causal mask and `window_size`.

    HF's own SDPA and eager masks never reach this path where a window binds: upstream materialises the mask whenever
    the key length reaches the window (transformers 5.23 `masking_utils._ignore_causal_mask_sdpa`).
    """
    per_layer = {0: {"sliding_window": 3}, 2: {"sliding_window": 5}}
    stock = build_model(ARCHS["mistral"], per_layer, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend="transformer_engine")
    input_ids = make_input_ids(seq_len=10).to(te_runtime.device)
    no_masks = {"full_attention": None, "sliding_attention": None}
    with te_runtime.active(), torch.no_grad():
        expected = stock(input_ids).logits
        logits = model(input_ids, attention_mask=no_masks).logits
        unwindowed = stock(input_ids, attention_mask=no_masks).logits  # stock SDPA without a mask: causal only
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=ATOL)
    assert (unwindowed - expected).abs().max() > 1e-3  # the windows matter at this length


def test_each_layer_has_its_own_layer_number(te_runtime):
    """TE keys per-layer state by `layer_number` (TE 2.20.2 `attention/dot_product_attention/dot_product_attention.py`:
    `InferenceParams.step(self.layer_number, ...)`, the ALiBi cache at layer 1): it is the layer's index + 1, also
    after stock, skipped and linear layers."""
    per_layer = {1: {"skip": ["attention"]}, 2: {"skip": ["attention_replaced_by_linear"]}}
    config = build_config(ARCHS["llama"], per_layer, 5)
    with te_runtime.active():
        model = AutoModelForCausalLM.from_config(config, decoder_backend={"transformer_engine": [0, 1, 2, 4]})
    numbers = {
        index: layer.self_attention.core_attention.layer_number
        for index, layer in enumerate(model.model.layers)
        if isinstance(getattr(layer, "self_attention", None), TransformerEngineAttention)
    }
    assert numbers == {0: 1, 4: 5}


def test_softmax_scale_is_the_stock_layers(te_runtime):
    """A TE layer scales attention scores by its stock layer's `scaling`, not by TE's default `1/sqrt(head_dim)`."""
    stock = build_model(ARCHS["llama"], None, 1, attn_implementation="sdpa").to(te_runtime.device)
    stock_layer = stock.model.layers[0]
    stock_layer.self_attn.scaling = 0.5  # an attention with its own scale; TE's default for head_dim 16 is 0.25
    hidden_states = torch.randn(2, 6, stock.config.hidden_size, device=te_runtime.device)
    position_ids = torch.arange(6, device=te_runtime.device)[None]
    with te_runtime.active(), torch.no_grad():
        layer = build_transformer_engine_layers(stock.model.layers, stock.config, TransformerEngineBackend())[0]
        load_te_weights(layer, hf_to_te_state_dict(stock_layer))
        position_embeddings = stock.model.rotary_emb(hidden_states, position_ids)
        expected = stock_layer(hidden_states, position_embeddings=position_embeddings, position_ids=position_ids)
        output = layer(hidden_states, position_embeddings=position_embeddings)
    torch.testing.assert_close(output, expected, atol=ATOL, rtol=ATOL)


def test_mixed_model_of_every_layer_kind(te_runtime, tmp_path):
    """TE layers without attention (LayerNormMLP alone), without MLP, with linear sub-blocks (LayerNormLinear), a
    parameter-free layer, and a stock layer, in one model."""
    per_layer = {
        0: {"skip": ["attention"]},
        1: {"skip": ["mlp"], "num_key_value_heads": 4},
        2: {"skip": ["attention_replaced_by_linear"]},
        3: {"skip": ["mlp_replaced_by_linear"], "intermediate_size": 32},
        4: {"skip": ["attention", "mlp"]},
    }
    stock = build_model(ARCHS["llama"], per_layer, 6, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime, decoder_backend={"transformer_engine": [0, 1, 2, 3, 4]})
    te = te_runtime.te
    layers = model.model.layers
    assert layers[0].self_attention is None and isinstance(layers[0].layernorm_mlp, te.LayerNormMLP)
    assert layers[1].layernorm_mlp is None and layers[1].self_attention.core_attention.num_gqa_groups == 4
    assert isinstance(layers[2].self_attention, te.LayerNormLinear)
    assert isinstance(layers[3].layernorm_mlp, te.LayerNormLinear)
    assert type(layers[4]) is type(layers[5]) and not list(layers[4].parameters())  # identity stays stock, empty
    assert_padded_batch_matches(stock, model, te_runtime)


def test_bf16_error_is_hf_own_bf16_error(arch, te_runtime, tmp_path):
    reference = build_model(arch, PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    stock_bf16 = build_model(arch, PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device, torch.bfloat16)
    model = load_with_te(reference, tmp_path, te_runtime, decoder_backend="transformer_engine", dtype=torch.bfloat16)
    assert torch.get_default_dtype() == torch.float32  # loading leaks no default dtype
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    input_ids = make_input_ids(seq_len=8).to(te_runtime.device)
    with te_runtime.active(), torch.no_grad():
        expected = reference(input_ids).logits
        hf_error = (stock_bf16(input_ids).logits.float() - expected).abs().max()
        te_error = (model(input_ids).logits.float() - expected).abs().max()
    assert te_error <= 2 * hf_error, (te_error, hf_error)


def hf_named_gradients(model) -> dict[str, torch.Tensor]:
    """The model's gradients under HF checkpoint names (TE's fused fc1 split back into gate and up)."""
    from transformers.core_model_loading import revert_weight_conversion

    gradients = {name: parameter.grad for name, parameter in model.named_parameters()}
    return revert_weight_conversion(model, gradients)


def test_gradients_of_every_weight(arch, te_runtime, tmp_path):
    stock = build_model(arch, PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime)
    input_ids, attention_mask = padded_batch(te_runtime.device)
    # No loss where the prediction comes from a padded position (the first token after the padding included): what a
    # fully masked query attends to is left to each attention implementation.
    labels = input_ids.clone()
    labels[0, :4] = -100
    with te_runtime.active():
        for candidate in (stock, model):
            candidate.train()
            candidate(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        expected = {name: parameter.grad for name, parameter in stock.named_parameters()}
        gradients = hf_named_gradients(model)
    assert gradients.keys() == expected.keys()
    for name, gradient in expected.items():
        torch.testing.assert_close(gradients[name], gradient, atol=ATOL, rtol=1e-4, msg=name)


def test_trainer_steps_with_gradient_checkpointing(te_runtime, tmp_path):
    from transformers import Trainer, TrainingArguments

    stock = build_model(ARCHS["llama"], PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime)
    input_ids = make_input_ids(batch_size=4, seq_len=8)
    dataset = [{"input_ids": row, "labels": row} for row in input_ids]
    losses = []
    # SGD: Adam divides by the gradients' own scale, which turns rounding-level differences of near-zero gradients
    # into full-size updates and says nothing about the backend.
    for name, candidate in (("stock", stock), ("te", model)):
        arguments = TrainingArguments(
            output_dir=str(tmp_path / name), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
            optim="sgd", gradient_checkpointing=True, gradient_checkpointing_kwargs=recompute_in_emulation(te_runtime),
            logging_steps=1, report_to=[], save_strategy="no",
            use_cpu=te_runtime.emulated, seed=0, data_seed=0, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = Trainer(model=candidate, args=arguments, train_dataset=dataset)
        with te_runtime.active():
            trainer.train()
        assert candidate.model.gradient_checkpointing
        losses.append([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
        candidate.save_pretrained(tmp_path / f"{name}-trained")
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    trained = [load_file(tmp_path / f"{name}-trained" / "model.safetensors") for name in ("stock", "te")]
    for name, weight in trained[0].items():
        torch.testing.assert_close(trained[1][name], weight, atol=1e-5, rtol=1e-4, msg=name)


def recompute_in_emulation(te_runtime) -> dict:
    """Checkpointing arguments that recompute a layer inside the CUDA emulation.

    The emulation maps CUDA devices through a torch function mode, and a mode is off while it handles a call: the
    backward pass (`Tensor.backward`, which it handles) would recompute TE's forward without it. Real TE needs nothing.
    """
    if not te_runtime.emulated:
        return {"use_reentrant": False}
    from .transformer_engine.emulation import _CudaOnCpu

    return {"use_reentrant": False, "context_fn": lambda: (contextlib.nullcontext(), _CudaOnCpu())}


@pytest.mark.parametrize("max_shard_size", [None, "20KB"], ids=["single-file", "sharded"])
def test_save_load_round_trip(max_shard_size, te_runtime, tmp_path):
    stock = build_model(ARCHS["qwen2"], PER_LAYER, 3, attn_implementation="sdpa")
    save_kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    stock.save_pretrained(tmp_path / "stock", **save_kwargs)
    with te_runtime.active():
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "stock", decoder_backend="transformer_engine")
        model.save_pretrained(tmp_path / "te", **save_kwargs)
    saved = {**_load_all(tmp_path / "stock")}
    written = {**_load_all(tmp_path / "te")}
    assert written.keys() == saved.keys() and not [key for key in written if "extra_state" in key]
    for key, tensor in saved.items():
        assert torch.equal(written[key], tensor), key
    # The choice belongs to the run: the config is the stock one and loads without TE.
    assert json.loads((tmp_path / "te" / "config.json").read_text()) == json.loads(
        (tmp_path / "stock" / "config.json").read_text()
    )
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "te")
    assert not te_layer_indices(reloaded)
    input_ids = make_input_ids()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, stock(input_ids).logits, atol=0, rtol=0)


def _load_all(directory) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def test_hf_init_leaves_te_modules_alone(te_runtime):
    """HF's `_init_weights` sets `weight` of every "*LayerNorm*" class to 1: for TE's `LayerNormLinear` of a linear
    sub-block that is the projection. TE layers keep TE's initialisation, with the config's `initializer_range`."""
    per_layer = {1: {"skip": ["attention_replaced_by_linear", "mlp_replaced_by_linear"]}}
    config = build_config(ARCHS["llama"], per_layer, 2)
    with te_runtime.active():
        model = AutoModelForCausalLM.from_config(config, decoder_backend="transformer_engine")
        before = {name: parameter.clone() for name, parameter in model.named_parameters()}
        model.init_weights()
    layers = model.model.layers
    projections = [
        layers[0].self_attention.layernorm_qkv.query_weight,
        layers[1].self_attention.weight,  # the linear attention's LayerNormLinear
        layers[1].layernorm_mlp.weight,  # the linear MLP's
    ]
    for projection in projections:
        assert abs(projection.std().item() - config.initializer_range) < 0.005
    for norm in (layers[0].self_attention.layernorm_qkv, layers[1].self_attention, layers[1].layernorm_mlp):
        assert torch.equal(norm.layer_norm_weight, torch.ones(config.hidden_size))
    for name, parameter in model.named_parameters():
        if ".layers." in name:
            assert torch.equal(parameter, before[name]), name


@pytest.fixture
def te_initialisations(te_runtime, monkeypatch) -> list[tuple[str, bool]]:
    """Each `reset_parameters(defer_init=...)` of TE's GEMM modules (TE 2.20.2 `module/base.py`): `True` is TE's path
    for the meta device (nothing allocated or initialised), `False` allocates every parameter on the GPU and
    initialises it."""
    base = importlib.import_module("transformer_engine.pytorch.module.base").TransformerEngineBaseModule
    original = base.reset_parameters
    calls = []

    def recording(module, defer_init=False):
        calls.append((type(module).__name__, defer_init))
        return original(module, defer_init=defer_init)

    monkeypatch.setattr(base, "reset_parameters", recording)
    return calls


def test_meta_device_allocates_no_te_parameter(te_runtime, te_initialisations):
    """Stock layers on the meta device (what `from_pretrained` builds) give TE layers on the meta device, built by TE's
    deferred-initialisation path: no GEMM weight, norm or linear sub-block is allocated before the weights load."""
    per_layer = {1: {"skip": ["mlp_replaced_by_linear"]}, 2: {"skip": ["attention_replaced_by_linear"]}}
    config = build_config(ARCHS["qwen3"], per_layer, 3)  # q/k norms too
    with te_runtime.active(), use_decoder_backend("transformer_engine"), torch.device("meta"):
        model = ARCHS["qwen3"].model_cls(config)
    assert te_layer_indices(model) == [0, 1, 2]
    te_parameters = dict(model.model.layers.named_parameters())
    assert len(te_parameters) == 24 and all(parameter.is_meta for parameter in te_parameters.values())
    assert len(te_initialisations) == 8 and all(defer for _, defer in te_initialisations), te_initialisations


def test_from_pretrained_allocates_te_parameters_once(te_runtime, te_initialisations, tmp_path):
    stock = build_model(ARCHS["llama"], PER_LAYER, 3, attn_implementation="sdpa").to(te_runtime.device)
    model = load_with_te(stock, tmp_path, te_runtime)
    assert te_initialisations and all(defer for _, defer in te_initialisations), te_initialisations
    assert not [name for name, parameter in model.named_parameters() if parameter.is_meta]
    input_ids = make_input_ids().to(te_runtime.device)
    with te_runtime.active(), torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, stock(input_ids).logits, atol=ATOL, rtol=ATOL)


def test_stock_without_a_choice(tmp_path):
    stock = build_model(ARCHS["llama"], None, 2)
    stock.save_pretrained(tmp_path)
    for decoder_backend in (None, "stock"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path, decoder_backend=decoder_backend)
        assert not te_layer_indices(model)


def test_unsupported_layer_is_refused_by_layer_and_attribute(te_runtime):
    config = build_model(ARCHS["llama"], None, 2).config
    config.hidden_act = "gelu"
    with te_runtime.active(), pytest.raises(DecoderBackendError) as error:
        AutoModelForCausalLM.from_config(config, decoder_backend={"transformer_engine": [1]})
    assert str(error.value).startswith("Layer 1: decoder_backend='transformer_engine' cannot run `hidden_act`: 'gelu'")


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config

    with pytest.raises(DecoderBackendError, match="cannot run model_type 'gpt2'"):
        AutoModelForCausalLM.from_config(
            GPT2Config(n_layer=1, n_embd=32, n_head=2), decoder_backend="transformer_engine"
        )


def test_masks_te_cannot_take_are_refused():
    with pytest.raises(DecoderBackendError) as error:
        _te_mask(torch.ones(2, 5), None, 3)
    assert str(error.value).startswith("Layer 3: a TE layer needs a 4D attention mask or None, got a 2D tensor; ")
    assert "attn_implementation='sdpa' or 'eager'" in str(error.value)


def test_missing_cuda_is_a_clear_error(te_runtime):
    if not te_runtime.emulated:
        pytest.skip("CUDA is available here")
    config = build_model(ARCHS["llama"], None, 2).config
    # Outside `active()` the emulation reports the truth: no CUDA.
    with pytest.raises(TransformerEngineUnavailableError, match="needs a CUDA GPU"):
        AutoModelForCausalLM.from_config(config, decoder_backend="transformer_engine")


def test_missing_transformer_engine_is_a_clear_error(monkeypatch):
    for name in ("transformer_engine", "transformer_engine.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    config = build_model(ARCHS["llama"], None, 1).config
    with pytest.raises(TransformerEngineUnavailableError) as error:
        AutoModelForCausalLM.from_config(config, decoder_backend="transformer_engine")
    assert "needs NVIDIA TransformerEngine for PyTorch, which could not be imported" in str(error.value)
    assert "pip install --no-build-isolation 'transformer-engine[pytorch,core_cu" in str(error.value)
    assert "]==2.20.2'" in str(error.value)


def test_a_nemotron_nas_checkpoint_runs_on_transformer_engine(tmp_path, te_runtime):
    """The checkpoint families share the registry row of the architecture whose stock layers build them, so a
    Nemotron-NAS release (linear, no-op and narrowed sub-blocks; TE layers, `LayerNormMLP` / attention alone and
    `LayerNormLinear`) runs on TE like the Llama it derives from, with the stock load's logits."""
    from .checkpoints import write_nemotron_checkpoint

    path = write_nemotron_checkpoint(tmp_path / "nemotron")
    stock = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(te_runtime.device).eval()
    with te_runtime.active():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, decoder_backend="transformer_engine")
    model = model.to(te_runtime.device).eval()
    assert type(model).__name__ == "DeciLMForCausalLM"
    assert sum(isinstance(layer, TransformerEngineDecoderLayer) for layer in model.model.layers) > 0
    input_ids = make_input_ids(seq_len=7).to(te_runtime.device) % stock.config.vocab_size
    with te_runtime.active(), torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, stock(input_ids).logits, atol=ATOL, rtol=1e-4)


def test_te_parameters_the_checkpoint_lacks_get_te_s_init(tmp_path, te_runtime):
    """A tensor missing from the checkpoint is reported as newly initialised; on a TE layer it must then hold TE's
    initial values (the stock model's `_init_weights` skips TE modules), not the memory it was allocated with, and
    the other parameters of the same TE module keep their loaded values."""
    from safetensors.torch import save_file

    stock = build_model(ARCHS["llama"], PER_LAYER, 3)
    stock.save_pretrained(tmp_path / "stock")
    weights = load_file(tmp_path / "stock" / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, tmp_path / "stock" / "model.safetensors", metadata={"format": "pt"})
    with te_runtime.active():
        model, info = AutoModelForCausalLM.from_pretrained(
            tmp_path / "stock", decoder_backend="transformer_engine", output_loading_info=True
        )
    assert info["missing_keys"] == {"model.layers.0.layernorm_mlp.fc2_weight"}
    layernorm_mlp = model.model.layers[0].layernorm_mlp
    fc2 = layernorm_mlp.fc2_weight.detach()
    assert torch.isfinite(fc2).all()
    assert 0.5 * stock.config.initializer_range < fc2.std() < 2 * stock.config.initializer_range
    intermediate = stock.config.per_layer_config[0].intermediate_size
    torch.testing.assert_close(layernorm_mlp.fc1_weight[:intermediate], weights["model.layers.0.mlp.gate_proj.weight"])
