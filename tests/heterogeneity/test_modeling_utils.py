"""The generic per-layer mechanism: custom models opting in, and every construction error with its message."""

import ast
import json

import pytest
import torch
from torch import nn

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.heterogeneity import (
    HeterogeneousConfigError,
    ReturnEntry,
    SkippedModule,
    UnsupportedArchitectureError,
    get_skip_replacement,
)

from .conftest import TINY


def build_llama(per_layer_config: dict) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=per_layer_config))


# --- error paths ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_layer_config", "message"),
    [
        (
            {1: {"skip": ["attn"]}},
            r"Layer 1: unknown skip 'attn' for llama; this architecture can skip "
            r"\['attention', 'attention_replaced_by_linear', 'mlp', 'mlp_replaced_by_linear'\]",
        ),
        ({2: {"num_key_value_heads": 3}}, r"Layer 2: `num_key_value_heads`=3 does not divide `num_attention_heads`=4"),
        (
            {1: {"num_attention_heads": 8, "num_key_value_heads": 3}},
            r"Layer 1: `num_key_value_heads`=3 does not divide `num_attention_heads`=8",
        ),
        ({0: {"vocab_size": 50}}, r"Layer 0: `vocab_size`=50 cannot be set per layer; it is a model-level attribute"),
        (
            {1: {"hidden_size": 32}},
            r"Layer 1: `hidden_size`=32 cannot be set per layer; it is a model-level attribute",
        ),
        ({1: {"initializer_range": 0.5}}, r"Layer 1: `initializer_range`=0.5 is not read by LlamaDecoderLayer"),
        ({2: {"intermediate_size": -8}}, r"Layer 2: `intermediate_size` must be a positive integer, got -8"),
        ({2: {"intermediate_size": 0}}, r"Layer 2: `intermediate_size` must be a positive integer, got 0"),
    ],
)
def test_invalid_per_layer_config_is_refused_with_layer_attribute_and_value(per_layer_config, message):
    with pytest.raises(HeterogeneousConfigError, match=message):
        build_llama(per_layer_config)


@pytest.mark.parametrize(
    ("per_layer_config", "message"),
    [
        (
            {2: {"intermediate_size": "64"}},
            r"Layer 2: `intermediate_size`='64' has type str, but LlamaConfig declares `intermediate_size` as int\.",
        ),
        ({2: {"intermediate_size": None}}, r"Layer 2: `intermediate_size`=None has type NoneType, but LlamaConfig"),
        (
            {1: {"hidden_act": 3}},
            r"Layer 1: `hidden_act`=3 has type int, but LlamaConfig declares `hidden_act` as str",
        ),
        ({1: {"num_attention_heads": 6}}, r"Layer 1: The hidden size \(64\) is not a multiple of .* heads \(6\)"),
    ],
)
def test_config_validation_runs_per_layer_and_names_the_layer(per_layer_config, message):
    """Upstream's field types and LlamaConfig's own checks apply to each layer's values, at config creation, and fail
    with a `HeterogeneousConfigError` (upstream's `@strict` would raise `StrictDataclassClassValidationError`, which is
    no `ValueError`)."""
    with pytest.raises(HeterogeneousConfigError, match=f"(?s){message}"):
        LlamaConfig(**TINY, per_layer_config=per_layer_config)


# A value each attribute may take on one layer of TINY (hidden 64, 4 heads, 2 KV heads).
VALID_LAYER_VALUES = {
    "attention_bias": True,
    "attention_dropout": 0.1,
    "head_dim": 8,
    "hidden_act": "gelu",
    "intermediate_size": 32,
    "mlp_bias": True,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
}


def test_the_attributes_an_ignored_override_error_offers_can_all_be_set_per_layer():
    with pytest.raises(HeterogeneousConfigError, match="Per-layer attributes it reads include") as error:
        build_llama({1: {"initializer_range": 0.5}})
    offered = ast.literal_eval(
        str(error.value).rsplit("include: ", 1)[1].rstrip(".")
    )  # the list as the message renders it
    assert "hidden_size" not in offered and "rms_norm_eps" not in offered  # model-level, and read by the final norm
    assert sorted(offered) == sorted(VALID_LAYER_VALUES)
    for name in offered:
        build_llama({1: {name: VALID_LAYER_VALUES[name]}})


def test_refusals_are_value_errors_that_getattr_defaults_cannot_swallow():
    assert issubclass(HeterogeneousConfigError, ValueError)
    assert not issubclass(HeterogeneousConfigError, AttributeError)


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, per_layer_config={1: {"n_inner": 64}})
    with pytest.raises(UnsupportedArchitectureError, match=r"GPT2LMHeadModel \(model_type 'gpt2'\) cannot be built"):
        GPT2LMHeadModel(config)


def test_per_layer_values_that_equal_the_global_value_change_nothing():
    torch.manual_seed(0)
    model = build_llama({1: {"intermediate_size": 128}})
    assert not model.config.per_layer_attributes
    assert model.model.layers[1].mlp.up_proj.weight.shape == (128, 64)


def test_fully_skipped_layer_is_the_identity():
    model = build_llama({1: {"skip": ["attention", "mlp"]}})
    layer = model.model.layers[1]
    assert list(layer.parameters()) == []
    hidden_states = torch.randn(1, 5, 64)
    position_embeddings = model.model.rotary_emb(hidden_states, torch.arange(5)[None])
    output = layer(hidden_states, position_embeddings=position_embeddings, position_ids=torch.arange(5)[None])
    assert torch.equal(output, hidden_states)


# --- custom models opt in with class attributes --------------------------------------------------------------------


class ToyConfig(PreTrainedConfig):
    model_type = "toy_heterogeneous"

    def __init__(self, hidden_size=8, intermediate_size=16, num_hidden_layers=3, **kwargs):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)


class ToyMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.proj(hidden_states), None


class ToyFeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, inputs):
        return self.down(torch.relu(self.up(inputs)))


class ToyBlock(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.mixer = ToyMixer(config)
        self.feed_forward = ToyFeedForward(config)

    def forward(self, hidden_states):
        mixed, _ = self.mixer(hidden_states)
        hidden_states = hidden_states + mixed
        return hidden_states + self.feed_forward(hidden_states)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    _layer_cls = ToyBlock
    _layer_idx_arg = "index"
    _skip_descriptors = {
        "mixer": {
            "mixer": get_skip_replacement(ToyMixer, ReturnEntry("hidden_states", torch.zeros_like), ReturnEntry(None))
        },
        "feed_forward": {
            "feed_forward": get_skip_replacement(ToyFeedForward, ReturnEntry("inputs", torch.zeros_like))
        },
    }

    def __init__(self, config):
        super().__init__(config)
        self.blocks = nn.ModuleList([ToyBlock(config, index) for index in range(config.num_hidden_layers)])
        self.post_init()

    def forward(self, hidden_states):
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


def test_custom_model_opts_in_with_class_attributes():
    config = ToyConfig(
        per_layer_config={0: {"intermediate_size": 4}, 1: {"skip": ["mixer"]}, 2: {"skip": ["feed_forward"]}}
    )
    model = ToyModel(config)
    assert model.blocks[0].feed_forward.up.weight.shape == (4, 8)
    assert model.blocks[2].mixer.proj.weight.shape == (8, 8)
    assert isinstance(model.blocks[1].mixer, SkippedModule) and isinstance(model.blocks[2].feed_forward, SkippedModule)
    assert not [key for key in model.state_dict() if key.startswith(("blocks.1.mixer", "blocks.2.feed_forward"))]

    # Reference: the same computation written out with the surviving weights.
    hidden_states = torch.randn(2, 8)
    expected = hidden_states
    for index, block in enumerate(model.blocks):
        if index != 1:
            expected = expected + block.mixer.proj(expected)
        if index != 2:
            feed_forward = block.feed_forward
            expected = expected + feed_forward.down(torch.relu(feed_forward.up(expected)))
    torch.testing.assert_close(model(hidden_states), expected)


def test_custom_model_unknown_skip_is_refused():
    with pytest.raises(HeterogeneousConfigError, match=r"Layer 0: unknown skip 'attention' for toy_heterogeneous"):
        ToyModel(ToyConfig(per_layer_config={0: {"skip": ["attention"]}}))


def test_custom_model_with_wrong_layer_index_argument_is_refused():
    class BadModel(ToyModel):
        _layer_idx_arg = "layer_idx"

    class OtherBlock(ToyBlock):
        pass

    BadModel._layer_cls = OtherBlock
    with pytest.raises(TypeError, match=r"OtherBlock.__init__ has no `layer_idx` argument"):
        BadModel(ToyConfig(per_layer_config={0: {"intermediate_size": 4}}))


def test_custom_skip_descriptor_must_hold_replacement_classes():
    class BadDescriptors(ToyModel):
        _skip_descriptors = {"mixer": {"mixer": nn.Identity}}

    with pytest.raises(TypeError, match=r"_skip_descriptors\['mixer'\]\['mixer'\] must be a class made by"):
        BadDescriptors(ToyConfig(per_layer_config={0: {"skip": ["mixer"]}}))


def test_heterogeneous_model_survives_deepcopy_and_pickle():
    """Layer configs are instances of a class made at runtime; copies and pickles must still rebuild them."""
    import copy
    import pickle

    torch.manual_seed(0)
    model = build_llama({1: {"intermediate_size": 32}, 2: {"skip": ["attention"]}})
    input_ids = torch.tensor([[1, 2, 3, 4]])
    expected = model(input_ids).logits
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(clone(input_ids).logits, expected)
        layer_config = clone.model.layers[1].self_attn.config
        assert layer_config.intermediate_size == 32
        clone.set_attn_implementation("eager")
        assert layer_config._attn_implementation == "eager"  # still follows the clone's own global config


class MixerSkippedAsInputModel(ToyModel):
    """Another custom model of the same `model_type`: its `mixer` skip returns the input instead of zeros."""

    _skip_descriptors = {
        "mixer": {"mixer": get_skip_replacement(ToyMixer, ReturnEntry("hidden_states"), ReturnEntry(None))},
    }


class OuterToyModel(ToyModel):
    """Builds an inner model of the same `model_type` with other skip descriptors before its own blocks."""

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        self.inner = MixerSkippedAsInputModel(config)
        self.blocks = nn.ModuleList([ToyBlock(config, index) for index in range(config.num_hidden_layers)])
        self.post_init()


def test_each_model_class_builds_its_layers_with_its_own_skip_descriptors():
    """Skip specs belong to the model class being built, not to the last one registered for the model type."""
    model = OuterToyModel(ToyConfig(per_layer_config={1: {"skip": ["mixer"]}}))
    hidden_states = torch.randn(2, 8)
    outer_mixer, inner_mixer = model.blocks[1].mixer, model.inner.blocks[1].mixer
    assert torch.equal(outer_mixer(hidden_states)[0], torch.zeros_like(hidden_states))
    assert torch.equal(inner_mixer(hidden_states)[0], hidden_states)


class OtherToyConfig(PreTrainedConfig):
    model_type = "toy_heterogeneous_other"

    def __init__(self, hidden_size=8, intermediate_size=16, num_hidden_layers=3, **kwargs):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)


class InnerBuildsLayerOfOuter(MixerSkippedAsInputModel):
    """Builds, inside its own `__init__`, a layer from a config it does not own (PR #45332's nested case)."""

    config_class = OtherToyConfig

    def __init__(self, config, build_layer):
        PreTrainedModel.__init__(self, config)
        self.borrowed = build_layer()
        self.blocks = nn.ModuleList([ToyBlock(config, index) for index in range(config.num_hidden_layers)])
        self.post_init()


class OuterOwnsTheLayerConfig(ToyModel):
    """Skips its `mixer` with zeros (ToyModel's descriptors); the inner model skips it by returning the input."""

    def __init__(self, config, inner_config):
        PreTrainedModel.__init__(self, config)
        self.inner = InnerBuildsLayerOfOuter(inner_config, lambda: ToyBlock(config, 1))
        self.blocks = nn.ModuleList([ToyBlock(config, index) for index in range(config.num_hidden_layers)])
        self.post_init()


def test_a_layer_takes_the_skips_of_the_model_that_owns_its_config():
    """`Inner(inner_config, lambda: Layer(outer_config, 0))` inside `Outer`: the layer uses the outer config, so it is
    built with the outer model's skip descriptors, not with those of the innermost model being built."""
    outer_config = ToyConfig(per_layer_config={1: {"skip": ["mixer"]}})
    inner_config = OtherToyConfig(per_layer_config={1: {"skip": ["mixer"]}})
    model = OuterOwnsTheLayerConfig(outer_config, inner_config)
    hidden_states = torch.randn(2, 8)
    zeros = torch.zeros_like(hidden_states)
    assert torch.equal(model.inner.borrowed.mixer(hidden_states)[0], zeros)  # the outer model's descriptor
    assert torch.equal(model.inner.blocks[1].mixer(hidden_states)[0], hidden_states)  # the inner model's own
    assert torch.equal(model.blocks[1].mixer(hidden_states)[0], zeros)


def test_models_under_construction_are_tracked_per_thread_and_released():
    """The stack of models under construction is empty after a build, after a build that raised, and in a thread
    that builds nothing while another one builds."""
    import threading

    from transformers.heterogeneity.modeling_utils import models_under_construction

    class Raises(ToyModel):
        def __init__(self, config):
            PreTrainedModel.__init__(self, config)
            raise RuntimeError("broken model")

    import gc

    try:
        Raises(ToyConfig(per_layer_config={0: {"intermediate_size": 4}}))
    except RuntimeError as error:
        assert "broken model" in str(error)
        del error
    gc.collect()
    # The stack holds models weakly: one whose `__init__` raised (and never reached `post_init`) is gone with it.
    assert not [model for model in models_under_construction() if isinstance(model, Raises)]

    seen_in_other_thread = []
    started, release = threading.Event(), threading.Event()

    class Waits(ToyModel):
        def __init__(self, config):
            PreTrainedModel.__init__(self, config)
            started.set()
            release.wait(10)
            super().__init__(config)

    builder = threading.Thread(target=lambda: Waits(ToyConfig(per_layer_config={0: {"intermediate_size": 4}})))
    builder.start()
    started.wait(10)
    seen_in_other_thread.append(models_under_construction())
    release.set()
    builder.join(10)
    assert seen_in_other_thread == [[]]
    # A later model of the same class is built with its own (homogeneous) config, untouched by the failed one.
    assert ToyModel(ToyConfig()).blocks[0].feed_forward.up.weight.shape == (16, 8)


@pytest.mark.parametrize("layer_idx", [True, 1.0, "1", None])
def test_a_layer_index_must_be_an_integer(layer_idx):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    config = LlamaConfig(**TINY, per_layer_config={1: {"intermediate_size": 32}})
    with pytest.raises(HeterogeneousConfigError, match=rf"built with layer index {layer_idx!r}; .* an integer"):
        LlamaDecoderLayer(config, layer_idx=layer_idx)


MTP_SCRIPT = """
import json, torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_layers import MtpModel
torch.manual_seed(0)
config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100)
config.num_mtp_layers = 1
config.mtp_per_layer_config = {0: {"is_causal": False}}
main_model = LlamaForCausalLM(config)
mtp = MtpModel(main_model, num_mtp_layers=1)
print(json.dumps({"parameters": {name: list(p.shape) for name, p in mtp.named_parameters()},
                  "is_causal": mtp.config.per_layer_config[0].is_causal}))
"""


@pytest.mark.overlay_only
def test_models_that_read_per_layer_config_themselves_build_as_upstream():
    """`MtpModel` builds its layers from `mtp_per_layer_config` and reads `is_causal` per layer for its masks
    (transformers 5.23): it builds exactly as in a process where the package is off."""
    from .test_activation import run_python

    on = json.loads(run_python(MTP_SCRIPT))
    off = json.loads(run_python(MTP_SCRIPT, env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"}))
    assert on == off
    assert on["is_causal"] is False


def test_a_layer_with_its_own_rotary_embedding_called_without_position_ids_says_so():
    model = build_llama({1: {"head_dim": 8}})
    layer = model.model.layers[1]
    assert hasattr(layer, "rotary_emb") and not hasattr(model.model.layers[0], "rotary_emb")
    with pytest.raises(
        ValueError, match="LlamaDecoderLayer has a rotary embedding of its own .* needs the `position_ids`"
    ):
        layer(torch.randn(1, 3, TINY["hidden_size"]))
