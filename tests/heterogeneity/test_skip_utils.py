"""Skip replacements keep the calling contract of the module they replace."""

import pytest
import torch
from torch import nn

from transformers.heterogeneity import ReturnEntry, SkippedModule, get_skip_replacement


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states, attention_mask=None, *, position_embeddings=None):
        return self.proj(hidden_states), None


def test_replacement_returns_entries_from_positional_and_keyword_arguments():
    skipped_cls = get_skip_replacement(Attention, ReturnEntry("hidden_states", torch.zeros_like), ReturnEntry(None))
    hidden_states = torch.randn(2, 3, 4)
    for call in (lambda m: m(hidden_states, None), lambda m: m(hidden_states=hidden_states, attention_mask=None)):
        output, weights = call(skipped_cls())
        assert torch.equal(output, torch.zeros_like(hidden_states))
        assert weights is None


def test_single_entry_is_returned_bare_and_untransformed():
    skipped = get_skip_replacement(Attention, ReturnEntry("attention_mask"))()
    mask = torch.ones(1, 1, 3, 3)
    assert skipped(torch.randn(1, 3, 4), mask) is mask


def test_keyword_only_argument_can_be_returned():
    skipped = get_skip_replacement(Attention, ReturnEntry("position_embeddings"))()
    assert skipped(torch.randn(1, 3, 4), position_embeddings="cos-sin") == "cos-sin"


def test_replacement_is_parameter_free_and_names_what_it_replaces():
    skipped_cls = get_skip_replacement(Attention, ReturnEntry("hidden_states"))
    skipped = skipped_cls()
    assert issubclass(skipped_cls, SkippedModule) and skipped_cls.replaces is Attention
    assert skipped_cls.__name__ == "SkippedAttention"
    assert list(skipped.parameters()) == [] and skipped.state_dict() == {}
    assert "replaces=Attention" in repr(skipped)


def test_equal_requests_share_one_class():
    entries = (ReturnEntry("hidden_states", torch.zeros_like), ReturnEntry(None))
    assert get_skip_replacement(Attention, *entries) is get_skip_replacement(Attention, *entries)


def test_unknown_argument_name_is_refused():
    with pytest.raises(ValueError, match=r"ReturnEntry\('hidden'\) names no argument of Attention.forward"):
        get_skip_replacement(Attention, ReturnEntry("hidden"))


def test_no_entries_is_refused():
    with pytest.raises(ValueError, match="needs at least one ReturnEntry"):
        get_skip_replacement(Attention)


def test_missing_argument_at_call_time_is_a_clear_error():
    skipped = get_skip_replacement(Attention, ReturnEntry("attention_mask"))()
    with pytest.raises(TypeError, match="returns its argument `attention_mask`, which this call did not pass"):
        skipped(torch.randn(1, 3, 4))
    skipped = get_skip_replacement(Attention, ReturnEntry("position_embeddings"))()
    with pytest.raises(TypeError, match="returns its argument `position_embeddings`, which this call did not pass"):
        skipped(torch.randn(1, 3, 4))  # keyword-only, not given


@pytest.mark.parametrize("arch_name", ["llama", "mistral"])
def test_output_attentions_has_one_map_per_layer_that_holds_attention_in_layer_order(arch_name):
    """The documented mapping: `attentions[k]` belongs to the k-th layer that holds attention, i.e. to
    `[size.layer_idx for size in kv_cache_bytes(config)][k]`; skipped and linear attentions have no map."""
    from transformers.heterogeneity import kv_cache_bytes

    from .conftest import ARCHS, build_model, layer_specs, make_input_ids
    from .reference import apply_rope, rms_norm, rope_cos_sin, visible

    per_layer = {
        1: {"skip": ["attention"]},
        2: {"num_attention_heads": 2},
        3: {"skip": ["attention_replaced_by_linear"]},
        4: {"num_attention_heads": 8, "sliding_window": 3} if arch_name == "mistral" else {"num_attention_heads": 8},
    }
    model = build_model(ARCHS[arch_name], per_layer, 5)
    input_ids = make_input_ids(batch_size=1, seq_len=6)
    with torch.no_grad():
        output = model(input_ids, output_attentions=True, output_hidden_states=True)
    attention_layers = [size.layer_idx for size in kv_cache_bytes(model.config)]
    assert attention_layers == [0, 2, 4]
    assert len(output.attentions) == len(attention_layers)

    # Each map against the attention probabilities computed by hand from that layer's input (hidden_states[i])
    state, specs = model.state_dict(), layer_specs(ARCHS[arch_name], per_layer, 5)
    for attention, layer_idx in zip(output.attentions, attention_layers):
        spec = specs[layer_idx]
        prefix = f"model.layers.{layer_idx}"
        x = rms_norm(output.hidden_states[layer_idx], state[f"{prefix}.input_layernorm.weight"], spec.rms_eps)
        seq_len = x.shape[1]
        q = (x @ state[f"{prefix}.self_attn.q_proj.weight"].T).view(1, seq_len, spec.num_heads, spec.head_dim)
        k = (x @ state[f"{prefix}.self_attn.k_proj.weight"].T).view(1, seq_len, spec.num_kv_heads, spec.head_dim)
        cos, sin = rope_cos_sin(torch.arange(seq_len), spec.head_dim, spec.rope_theta)
        q, k = apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin)
        k = k.repeat_interleave(spec.num_heads // spec.num_kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) * spec.head_dim**-0.5
        expected = scores.masked_fill(~visible(seq_len, spec), float("-inf")).softmax(dim=-1)
        torch.testing.assert_close(attention, expected, atol=1e-5, rtol=1e-5)
