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
"""The budgeted search: the MIP's choice against brute force on small libraries, budget parsing, and `search` on a tiny
parent (scores, costs, a child within the budget)."""

import itertools
import random
import sys

import pytest
import torch

from transformers.heterogeneity import DeriveError
from transformers.heterogeneity.derivation.mip import Budget, choose_variants, parse_budget
from transformers.heterogeneity.derivation.search import default_variants, search

from .derive_models import PARENT, calibration_ids, tiny_parent


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


def brute_force(scores, costs, limits):
    """The best total score over every choice within the limits (None if none is), by enumeration."""
    best = None
    for choice in itertools.product(*(range(len(row)) for row in scores)):
        if any(sum(costs[name][i][v] for i, v in enumerate(choice)) > limit for name, limit in limits.items()):
            continue
        total = sum(scores[i][v] for i, v in enumerate(choice))
        if total != float("inf") and (best is None or total < best):
            best = total
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_mip_finds_the_brute_force_optimum(seed):
    rng = random.Random(seed)
    layers, variants = rng.randint(2, 5), rng.randint(2, 4)
    scores = [[0.0] + [rng.random() for _ in range(variants - 1)] for _ in range(layers)]
    if seed % 3 == 0:
        scores[0][1] = float("inf")  # a variant layer 0 cannot take
    costs = {
        name: [[10.0] + [float(rng.randint(1, 10)) for _ in range(variants - 1)] for _ in range(layers)]
        for name in ("params", "kv_bytes")
    }
    limits = {"params": rng.uniform(0.4, 0.9) * 10 * layers}
    if seed % 2:
        limits["kv_bytes"] = rng.uniform(0.4, 0.9) * 10 * layers
    best = brute_force(scores, costs, limits)
    if best is None:
        with pytest.raises(DeriveError, match="No choice of one variant per layer meets the budget"):
            choose_variants(scores, costs, limits)
        return
    chosen = choose_variants(scores, costs, limits)
    assert sum(scores[i][v] for i, v in enumerate(chosen)) == pytest.approx(best, abs=1e-9)
    for name, limit in limits.items():
        assert sum(costs[name][i][v] for i, v in enumerate(chosen)) <= limit + 1e-9
    assert all(scores[i][v] != float("inf") for i, v in enumerate(chosen))


def test_an_unmeetable_budget_names_what_the_smallest_choice_needs():
    scores = [[0.0, 1.0], [0.0, 1.0]]
    costs = {"params": [[10, 4], [10, 6]]}
    with pytest.raises(DeriveError) as raised:
        choose_variants(scores, costs, {"params": 9}, {"params": "params=45%"})
    assert "params=45% allows 9 parameters, the smallest choice needs 10" in str(raised.value)
    assert "a budget is below what any choice needs" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "budget"),
    [("params=50%", Budget("params", 0.5, True)), ("kv_bytes=1.5e3", Budget("kv_bytes", 1500.0, False))],
)
def test_budgets_parse(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize(
    ("text", "message"),
    [("size=50%", "NAME one of ['flops', 'kv_bytes', 'latency', 'params']"), ("params=half", "not a number"),
     ("params=1e", "not a number"), ("params=1-2", "not a number"), ("params=.%", "not a number"),
     ("params=-5%", "must be positive"), ("params=nan", "not a number"), ("params", "write NAME=VALUE")],
)  # fmt: skip
def test_bad_budgets_are_refused(text, message):
    with pytest.raises(DeriveError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_budget(text)


def test_default_variants_combine_attention_and_mlp_options():
    variants = default_variants(tiny_parent().config)
    assert variants[0] == {}
    assert {"num_key_value_heads": 2} in variants and {"intermediate_size": 48} in variants
    assert {"num_key_value_heads": 2, "skip": ["mlp"]} in variants
    assert {"skip": ["attention", "mlp_replaced_by_linear"]} in variants
    # attention: as is, half the KV heads, linear, skipped; MLP: as is, 72, 48, 24, linear, skipped
    assert len(variants) == 4 * 6
    assert len(variants) == len({repr(v) for v in variants})


VARIANTS = [{"intermediate_size": 48}, {"skip": ["mlp"]}, {"skip": ["attention"]}, {"num_key_value_heads": 2}]


@pytest.fixture(scope="module")
def result():
    return search(tiny_parent(), ["params=70%"], calibration=calibration_ids(4, 32), variants=VARIANTS)


def test_search_scores_costs_and_meets_the_budget(result):
    parent = tiny_parent()
    layer_parameters = sum(p.numel() for p in parent.model.layers.parameters())
    assert result.parent_totals["params"] == layer_parameters
    assert result.variants[0] == {} and all(row[0] == 0.0 for row in result.scores)
    assert all(score > 0 for row in result.scores for score in row[1:])
    # costs are those of the layers as built: skipping the MLP removes its 3 projections and its norm
    mlp = sum(p.numel() for p in parent.model.layers[0].mlp.parameters()) + PARENT["hidden_size"]
    assert result.costs["params"][0][2] == result.costs["params"][0][0] - mlp
    assert (
        result.costs["kv_bytes"][0][3] == 0 and result.costs["kv_bytes"][0][4] == result.costs["kv_bytes"][0][0] // 2
    )
    child_parameters = sum(p.numel() for p in result.child.model.layers.parameters())
    assert child_parameters == result.totals()["params"] <= 0.7 * layer_parameters
    chosen_configs = {i: result.variants[v] for i, v in enumerate(result.chosen) if v}
    assert result.per_layer_config == chosen_configs
    assert {int(k) for k in result.child.derive_record.per_layer_config} == set(chosen_configs)
    best = brute_force(result.scores, result.costs, {"params": 0.7 * layer_parameters})
    assert sum(result.scores[i][v] for i, v in enumerate(result.chosen)) == pytest.approx(best)


def test_the_table_shows_each_layers_choice(result):
    table = result.table()
    assert table.splitlines()[0] == "| layer | variant | KL score | params | kv_bytes | flops |"
    assert "params=70%" in table and "of parent" in table


def test_search_refuses_a_budget_no_choice_meets():
    with pytest.raises(DeriveError, match="No choice of one variant per layer meets the budget"):
        search(tiny_parent(), ["params=5%"], calibration=calibration_ids(2, 16), variants=VARIANTS[:1])


def test_search_without_scipy_says_so_before_loading_anything(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # as where SciPy is not installed
    with pytest.raises(ImportError, match=r"pip install 'transformers-heterogeneity\[derive\]'"):
        search("no-such-parent", ["params=50%"], calibration=calibration_ids(2, 16))


def test_search_needs_calibration_and_a_budget():
    with pytest.raises(DeriveError, match="needs at least one budget"):
        search(tiny_parent(), [], calibration=calibration_ids(2, 16))
    with pytest.raises(DeriveError, match="scores each variant on calibration data"):
        search(tiny_parent(), ["params=50%"], calibration=None)
    with pytest.raises(DeriveError, match="latency budget needs measured latencies"):
        search(tiny_parent(), ["latency=50%"], calibration=calibration_ids(2, 16))


def test_search_with_a_distilled_library_and_measured_latency():
    from transformers.heterogeneity import DistillationConfig

    result = search(
        tiny_parent(), ["params=80%", "latency=200%"], calibration=calibration_ids(4, 32), variants=VARIANTS[:2],
        distillation=DistillationConfig(steps=5, batch_size=2), measure_latency=True,
    )  # fmt: skip
    assert all(latency > 0 for row in result.costs["latency"] for latency in row)
    record = result.child.derive_record
    changed = [name for name, tensor in record.tensors.items() if tensor.how != "copied"]
    assert changed and all(record.tensors[name].distilled for name in changed)
    assert torch.isfinite(torch.tensor(result.scores)).all()


def test_costs_follow_the_parents_layer_kinds():
    """Layers of a hybrid parent differ by block type without any override: each keeps its own costs."""
    from transformers.heterogeneity.derivation.search import _costs, _library_configs
    from transformers.heterogeneity.inspection import summarize_config

    from .nemotron_h_models import make_config

    parent_config = make_config(["mamba", "attention", "moe", "mlp"])
    configs, layer_overrides = _library_configs(parent_config, [{}])
    costs = _costs(parent_config, configs, layer_overrides)
    layers = summarize_config(parent_config, dtype=torch.float32).layers
    assert [row[0] for row in costs["params"]] == [layer.num_parameters for layer in layers]
    assert [row[0] for row in costs["kv_bytes"]] == [layer.kv_bytes_per_token for layer in layers]
    assert len({layer.num_parameters for layer in layers}) == 3  # layer 0's costs for every layer would fail
