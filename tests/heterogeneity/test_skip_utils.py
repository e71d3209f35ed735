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
