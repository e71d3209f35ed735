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
"""The core categories of upstream's model tests, for every head class of every registry row, heterogeneous.

Upstream's per-model tests are not in the 5.23 sdist, so they run outside this repository; this module keeps the
property they checked: each head class that the Auto mappings give a supported architecture (or checkpoint family),
built from a tiny heterogeneous config (`common_models.TINY_MODELS`), passes save/load, `from_config(model.config)`,
config copies, attention and hidden-state outputs, a training step, gradient checkpointing, embedding resizing and
eager vs sdpa. Each category compares against a reference that does not depend on this package being right: the
in-memory model (save/load, copies, resizing), the test's own numbers (output shapes), the same model without
gradient checkpointing, and the two attention implementations against each other.
"""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import dataclass
from functools import cached_property

import pytest
import torch

from transformers import AutoConfig, NemotronHConfig, NemotronHModel, PreTrainedConfig, PreTrainedModel
from transformers.heterogeneity import SkippedModule
from transformers.heterogeneity.linear_utils import LinearSubBlock
from transformers.heterogeneity.supported_models import SUPPORTED_ARCHITECTURES
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .common_models import BATCH_SIZE, PAD_TOKEN_ID, SEQ_LEN, TINY_MODELS, TinyModel, head_classes, training_targets
from .nemotron_h_models import BASE as NEMOTRON_H_BASE
from .nemotron_h_models import randomize_weights


pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = RTOL = 1e-5


@dataclass(frozen=True)
class Case:
    """One head class of one registry row."""

    row: str
    model_cls: type[PreTrainedModel]
    auto_cls: type
    tiny: TinyModel

    def __str__(self) -> str:
        return f"{self.row}-{self.model_cls.__name__}"

    def build(self, attn_implementation: str = "eager", seed: int = 0) -> PreTrainedModel:
        """A new model with distinct random weights (stock init leaves norms at one and biases at zero)."""
        torch.manual_seed(seed)
        return randomize_weights(self.model_cls(self.tiny.make_config(attn_implementation)), seed)

    @cached_property
    def input_ids(self) -> torch.Tensor:
        vocab_size = self.tiny.make_config("eager").vocab_size
        generator = torch.Generator().manual_seed(1)
        return torch.randint(PAD_TOKEN_ID + 1, vocab_size, (BATCH_SIZE, SEQ_LEN), generator=generator)


def _cases() -> list[Case]:
    cases = []
    for row in SUPPORTED_ARCHITECTURES:
        if row not in TINY_MODELS:
            continue  # `test_every_registry_row_has_a_tiny_heterogeneous_config` fails
        tiny = TINY_MODELS[row]
        for model_cls, auto_cls in head_classes(type(tiny.make_config("eager"))).items():
            cases.append(Case(row, model_cls, auto_cls, tiny))
    return cases


CASES = _cases()


def cases_for(variants: list[str] | None = None) -> list:
    """Every case (with every variant), as pytest parameters."""
    if variants is None:
        return [pytest.param(case, id=str(case)) for case in CASES]
    return [pytest.param(case, variant, id=f"{case}-{variant}") for case in CASES for variant in variants]


@pytest.fixture(scope="module")
def case(request) -> Case:
    return request.param


@pytest.fixture(scope="module")
def model(case: Case) -> PreTrainedModel:
    """The eager model of a case, for tests that do not change it."""
    return case.build()


def tensor_outputs(outputs) -> dict[str, torch.Tensor]:
    return {key: value for key, value in outputs.items() if isinstance(value, torch.Tensor)}


def structure(model: torch.nn.Module) -> tuple[list[tuple[str, str]], dict[str, tuple[int, ...]]]:
    """What a model is made of: every module's class by name, and every state-dict entry's shape."""
    modules = [(name, type(module).__name__) for name, module in model.named_modules()]
    return modules, {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def decoder_layers(case: Case, model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers (the registry's layer class)."""
    layer_cls = SUPPORTED_ARCHITECTURES[case.row].layer
    return [module for module in model.modules() if type(module).__name__ == layer_cls]


# --- the registry is covered -----------------------------------------------------------------------------------------


def test_every_registry_row_has_a_tiny_heterogeneous_config():
    """A new registry row (built in or a checkpoint family) gets these tests once it has an entry in the table."""
    missing = sorted(set(SUPPORTED_ARCHITECTURES) - set(TINY_MODELS))
    assert not missing, f"Add a tiny heterogeneous config to `common_models.TINY_MODELS` for {missing}."
    for row, tiny in TINY_MODELS.items():
        config = tiny.make_config("eager")
        assert config.model_type == row
        assert config.is_heterogeneous, row
        assert len(tiny.attention_heads) == config.num_hidden_layers, row


@pytest.mark.parametrize("row", sorted(TINY_MODELS))
def test_every_row_has_a_base_model_and_a_causal_lm(row):
    """The head classes are found: the Auto mappings give each row at least these two."""
    names = {auto_cls.__name__ for auto_cls in head_classes(type(TINY_MODELS[row].make_config("eager"))).values()}
    assert {"AutoModel", "AutoModelForCausalLM"} <= names


# --- save / load, from_config and config copies --------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_save_pretrained_then_from_pretrained_is_bit_exact(case, model, tmp_path):
    """The Auto class loads the saved model as the same class and structure, with the same tensors and outputs."""
    model.save_pretrained(tmp_path)
    reloaded = case.auto_cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is type(model)
    assert structure(reloaded) == structure(model)
    state = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    with torch.no_grad():
        expected = tensor_outputs(model(case.input_ids, use_cache=False))
        found = tensor_outputs(reloaded(case.input_ids, use_cache=False))
    assert found.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(found[key], tensor), key


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_from_config_of_model_config_builds_the_same_model(case, model, tmp_path):
    """`model.config`, and the config `AutoConfig` reads back from its `save_pretrained`, build the same model through
    the Auto class and the head class."""
    model.config.save_pretrained(tmp_path)
    from_disk = AutoConfig.from_pretrained(tmp_path)
    assert type(from_disk) is type(case.tiny.make_config("eager"))
    for built in (
        case.auto_cls.from_config(model.config),
        case.model_cls(model.config),
        case.auto_cls.from_config(from_disk),
    ):
        assert type(built) is case.model_cls
        assert structure(built) == structure(model)


def config_values(config: PreTrainedConfig) -> dict:
    """What `config` says, as JSON, less what `save_pretrained` of a model adds to its config (upstream)."""
    values = json.loads(config.to_json_string())
    for key in ("architectures", "dtype"):
        values.pop(key, None)
    return values


@pytest.mark.parametrize("row", sorted(TINY_MODELS))
def test_every_config_a_model_holds_builds_every_head(row):
    """Every config a row's models hold (each head's `config` and its base model's) builds every head class of the
    row, through its Auto class and directly, as the config they were made from does; e.g.
    `AutoModelForCausalLM.from_config(MistralModel(config).config)` and `MistralForQuestionAnswering(...)` on it."""
    config = TINY_MODELS[row].make_config("eager")
    heads = head_classes(type(config))
    expected, held = {}, {}
    for model_cls in heads:
        built = model_cls(config)
        expected[model_cls] = structure(built)
        for held_config in (built.config, built.base_model.config):
            held.setdefault(type(held_config), (model_cls.__name__, held_config))
    for config_cls, (holder, held_config) in held.items():
        for model_cls, auto_cls in heads.items():
            where = f"{auto_cls.__name__} / {model_cls.__name__} from the {config_cls.__name__} of {holder}"
            assert structure(auto_cls.from_config(held_config)) == expected[model_cls], where
            assert structure(model_cls(held_config)) == expected[model_cls], where


CONFIG_COPIES = {
    "itself": lambda config: config,
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda config: pickle.loads(pickle.dumps(config)),
    "to_dict": lambda config: AutoConfig.for_model(**config.to_dict()),
}


@pytest.mark.parametrize(("case", "operation"), cases_for(sorted(CONFIG_COPIES)), indirect=["case"])
def test_model_config_copies_are_usable_configs(case, model, operation):
    """`model.config` and its copies say what the config the model was built from says (`to_json_string`), and the
    copies build the same model (`model.config` itself: `test_from_config_of_model_config_builds_the_same_model`)."""
    copied = CONFIG_COPIES[operation](model.config)
    assert isinstance(copied, PreTrainedConfig)
    assert config_values(copied) == config_values(case.tiny.make_config("eager"))
    if operation != "itself":
        assert structure(case.auto_cls.from_config(copied)) == structure(model)


# --- outputs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_hidden_states_and_attentions(case, model):
    """One hidden state per layer plus the embeddings; one attention map per layer that has attention, with that
    layer's own head count, causal. A skipped (or linear) attention contributes no entry, as upstream's own layers
    without attention do (see `test_upstream_omits_attentions_of_layers_without_attention`)."""
    config = case.tiny.make_config("eager")
    with torch.no_grad():
        outputs = model(case.input_ids, output_hidden_states=True, output_attentions=True, use_cache=False)
    assert len(outputs.hidden_states) == config.num_hidden_layers + 1
    for hidden in outputs.hidden_states:
        assert hidden.shape == (BATCH_SIZE, SEQ_LEN, config.hidden_size)
    heads = [count for count in case.tiny.attention_heads if count is not None]
    assert [tuple(weights.shape) for weights in outputs.attentions] == [
        (BATCH_SIZE, count, SEQ_LEN, SEQ_LEN) for count in heads
    ]
    future = torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).triu(1)
    for weights in outputs.attentions:
        assert torch.all(weights[..., future] == 0)


def test_upstream_omits_attentions_of_layers_without_attention():
    """What upstream returns for layers without attention: a stock homogeneous NemotronH (Mamba, attention, MLP)
    outputs one attention map, for its one attention block. Its `attentions` are recorded by hooks on the attention
    class (`_can_record_outputs`, 5.23), so a layer holding no such module adds nothing."""
    config = NemotronHConfig(
        layers_block_type=["linear_attention", "full_attention", "mlp"], attn_implementation="eager", **NEMOTRON_H_BASE
    )
    assert not config.is_heterogeneous
    with torch.no_grad():
        outputs = NemotronHModel(config).eval()(torch.tensor([[1, 2, 3]]), output_attentions=True)
    assert len(outputs.attentions) == 1


# --- training --------------------------------------------------------------------------------------------------------


def training_loss(case: Case, model: PreTrainedModel) -> torch.Tensor:
    """The loss of one training step, from a fixed seed (token classification heads train with dropout)."""
    torch.manual_seed(0)
    targets = training_targets(case.auto_cls.__name__, case.input_ids)
    if targets is None:
        return model(case.input_ids, use_cache=False).last_hidden_state.square().mean()
    return model(case.input_ids, use_cache=False, **targets).loss


def gradients(case: Case, model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The gradients of one training step."""
    model.zero_grad(set_to_none=True)
    loss = training_loss(case, model)
    assert torch.isfinite(loss)
    loss.backward()
    return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_training_step(case):
    """The loss is finite, every trainable parameter gets a finite gradient (linear sub-blocks included), skipped
    sub-blocks hold nothing to train, and an optimizer step changes the loss."""
    model = case.build().train()
    config = case.tiny.make_config("eager")
    skips = {name for layer_config in config.per_layer_config for name in layer_config.skip}
    skipped = [
        module
        for module in model.modules()
        if isinstance(module, SkippedModule) and not isinstance(module, LinearSubBlock)
    ]
    assert bool(skipped) == bool(skips - {"attention_replaced_by_linear", "mlp_replaced_by_linear"})
    assert all(not list(module.parameters()) for module in skipped)
    for name, grad in gradients(case, model).items():
        assert grad is not None, f"{name} got no gradient"
        assert torch.isfinite(grad).all(), name
    with torch.no_grad():
        before = training_loss(case, model)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert training_loss(case, model) != before


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_gradient_checkpointing_gives_the_same_gradients(case):
    """With checkpointing, every decoder layer holding weights recomputes its forward in the backward pass, and the
    gradients are those of the same model without it (dropout included: the same seed, and checkpointing restores
    the random state when it recomputes). Recomputation stops once the backward has what it needs, so a layer runs
    more of its modules again, not necessarily all of them."""
    model = case.build().train()
    calls = []
    layers = decoder_layers(case, model)
    for layer_idx, layer in enumerate(layers):
        for module in list(layer.modules())[1:]:
            module.register_forward_hook(lambda *args, layer_idx=layer_idx: calls.append(layer_idx))
    expected = gradients(case, model)
    runs_without = [calls.count(layer_idx) for layer_idx in range(len(layers))]
    trained = [idx for idx, layer in enumerate(layers) if list(layer.parameters())]
    assert len(layers) == model.config.num_hidden_layers and trained
    for use_reentrant in (False, True):  # upstream's default, and the variant many training scripts ask for
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        assert model.is_gradient_checkpointing
        calls.clear()
        found = gradients(case, model)
        runs_with = [calls.count(layer_idx) for layer_idx in range(len(layers))]
        assert all(runs_with[idx] > runs_without[idx] for idx in trained), (use_reentrant, runs_with, runs_without)
        assert found.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(found[name], grad, atol=ATOL, rtol=RTOL, msg=f"{name} ({use_reentrant=})")


# --- embeddings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_resize_token_embeddings_keeps_the_layers(case, model):
    """The embeddings (and a language-model head) grow, the layers and `per_layer_config` stay as they were, and the
    old tokens give the same outputs as before (over the old vocabulary)."""
    resized = case.build()
    old_vocab = resized.config.vocab_size
    new_vocab = old_vocab + 12
    resized.resize_token_embeddings(new_vocab)
    assert resized.config.vocab_size == new_vocab
    assert resized.get_input_embeddings().weight.shape == (new_vocab, resized.config.hidden_size)
    if case.auto_cls.__name__ == "AutoModelForCausalLM":
        assert resized.get_output_embeddings().weight.shape == (new_vocab, resized.config.hidden_size)
    assert config_values(resized.config) == {**config_values(case.tiny.make_config("eager")), "vocab_size": new_vocab}
    old_layers, new_layers = decoder_layers(case, model), decoder_layers(case, resized)
    assert len(new_layers) == len(old_layers) == resized.config.num_hidden_layers
    for old, new in zip(old_layers, new_layers):
        assert structure(new) == structure(old)
        for name, tensor in old.state_dict().items():
            assert torch.equal(new.state_dict()[name], tensor), name
    with torch.no_grad():
        expected = tensor_outputs(model(case.input_ids, use_cache=False))
        found = tensor_outputs(resized(case.input_ids, use_cache=False))
        resized(torch.full((1, 3), new_vocab - 1), use_cache=False)  # a new token id runs
    for key, tensor in expected.items():
        torch.testing.assert_close(found[key][..., : tensor.shape[-1]], tensor, atol=ATOL, rtol=RTOL, msg=key)


# --- attention implementations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for(), indirect=True)
def test_eager_and_sdpa_agree(case, model, monkeypatch):
    """The same weights under both implementations give the same outputs, without padding and with a right-padded
    row (compared where it is not padding), and the sdpa model runs sdpa in every attention layer."""
    if not case.model_cls._supports_sdpa:
        pytest.skip(f"{case.model_cls.__name__} does not support sdpa upstream (`_supports_sdpa = False`).")
    sdpa = case.build("sdpa")
    sdpa.load_state_dict(model.state_dict())
    sdpa_calls = []
    sdpa_attention = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting_sdpa(*args, **kwargs):
        sdpa_calls.append(1)
        return sdpa_attention(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", counting_sdpa)
    padded_ids, padded_mask = case.input_ids.clone(), torch.ones_like(case.input_ids)
    padded_mask[1, -3:] = 0
    padded_ids[1, -3:] = PAD_TOKEN_ID
    for input_ids, mask in ((case.input_ids, None), (padded_ids, padded_mask)):
        sdpa_calls.clear()
        with torch.no_grad():
            expected = tensor_outputs(model(input_ids, attention_mask=mask, use_cache=False))
            found = tensor_outputs(sdpa(input_ids, attention_mask=mask, use_cache=False))
        assert len(sdpa_calls) == sum(count is not None for count in case.tiny.attention_heads)
        kept = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
        for key, tensor in expected.items():
            if tensor.shape[:2] == kept.shape:
                tensor, found[key] = tensor[kept], found[key][kept]
            torch.testing.assert_close(found[key], tensor, atol=ATOL, rtol=RTOL, msg=key)
