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
"""Each init mode of `derive` against its definition, on a tiny parent: the kept channels, heads and experts are
exactly the parent's ones that the definition selects, computed here from the parent's own activations."""

import pytest
import torch

from transformers.heterogeneity import derive
from transformers.heterogeneity.derivation.records import DeriveRecord

from .derive_models import calibration_ids, capture_inputs, tiny_parent


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


HEAD_DIM = 8


@pytest.fixture(scope="module")
def parent():
    return tiny_parent()


@pytest.fixture(scope="module")
def calibration():
    return calibration_ids()


def heads(weight: torch.Tensor, indices, dim: int = 0) -> torch.Tensor:
    """The blocks of HEAD_DIM rows (or columns) of the given heads, by explicit slicing."""
    blocks = [weight.narrow(dim, h * HEAD_DIM, HEAD_DIM) for h in indices]
    return torch.cat(blocks, dim=dim)


def head_contributions(parent, layer_idx, calibration) -> torch.Tensor:
    """Mean over tokens of ||W_o[:, head] @ o_head|| for every query head of a layer."""
    o_proj = parent.model.layers[layer_idx].self_attn.o_proj
    outputs = capture_inputs(parent, o_proj, calibration).double()
    contributions = []
    for h in range(outputs.shape[1] // HEAD_DIM):
        part = outputs[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] @ heads(o_proj.weight.double(), [h], dim=1).T
        contributions.append(part.norm(dim=1).mean())
    return torch.stack(contributions)


def test_ffn_truncate_keeps_the_first_channels(parent):
    child = derive(parent, {1: {"intermediate_size": 40}}, init="truncate")
    mlp, parent_mlp = child.model.layers[1].mlp, parent.model.layers[1].mlp
    assert torch.equal(mlp.gate_proj.weight, parent_mlp.gate_proj.weight[:40])
    assert torch.equal(mlp.up_proj.weight, parent_mlp.up_proj.weight[:40])
    assert torch.equal(mlp.down_proj.weight, parent_mlp.down_proj.weight[:, :40])
    entry = child.derive_record.sub_blocks[0]
    assert (entry.layer, entry.slot, entry.kind, entry.mode) == (1, "mlp", "ffn", "truncate")
    assert entry.kept["channels"] == list(range(40))


def test_ffn_importance_keeps_the_channels_that_add_most(parent, calibration):
    down = parent.model.layers[2].mlp.down_proj
    activations = capture_inputs(parent, down, calibration).double()
    importance = activations.abs().mean(dim=0) * down.weight.double().norm(dim=0)
    expected = sorted(torch.topk(importance, 40).indices.tolist())
    child = derive(parent, {2: {"intermediate_size": 40}}, calibration=calibration)  # importance is the default
    assert child.derive_record.sub_blocks[0].kept["channels"] == expected
    mlp = child.model.layers[2].mlp
    assert torch.equal(mlp.up_proj.weight, parent.model.layers[2].mlp.up_proj.weight[expected])
    assert torch.equal(mlp.down_proj.weight, down.weight[:, expected])
    dropped = sorted(set(range(96)) - set(expected))
    assert importance[dropped].max() <= importance[expected].min()


def test_a_wider_ffn_keeps_every_channel_and_the_parents_function(parent, calibration):
    child = derive(parent, {0: {"intermediate_size": 128}}, init="truncate")
    mlp, parent_mlp = child.model.layers[0].mlp, parent.model.layers[0].mlp
    assert torch.equal(mlp.gate_proj.weight[:96], parent_mlp.gate_proj.weight)
    assert torch.equal(mlp.down_proj.weight[:, 96:], torch.zeros(64, 32))
    with torch.no_grad():
        torch.testing.assert_close(child(calibration).logits, parent(calibration).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["average", "first", "importance"])
def test_fewer_kv_heads(parent, calibration, mode):
    child = derive(parent, {1: {"num_key_value_heads": 2}}, init={"kv_heads": mode}, calibration=calibration)
    attention, parent_attention = child.model.layers[1].self_attn, parent.model.layers[1].self_attn
    for name in ("k_proj", "v_proj"):
        weight = getattr(parent_attention, name).weight
        if mode == "average":  # child KV head g = mean of parent KV heads 2g and 2g+1
            expected = torch.cat([(heads(weight, [2 * g]) + heads(weight, [2 * g + 1])) / 2 for g in range(2)])
            torch.testing.assert_close(getattr(attention, name).weight, expected, atol=1e-7, rtol=0)
        else:
            if mode == "first":
                kept = [0, 2]
            else:  # of each pair, the KV head whose two query heads add more to the output
                per_kv_head = head_contributions(parent, 1, calibration).reshape(4, 2).sum(dim=1)
                kept = [2 * g + int(per_kv_head[2 * g + 1] > per_kv_head[2 * g]) for g in range(2)]
            assert torch.equal(getattr(attention, name).weight, heads(weight, kept))
            assert child.derive_record.sub_blocks[0].kept["kv_heads"] == kept
    assert torch.equal(attention.q_proj.weight, parent_attention.q_proj.weight)  # every query head stays
    assert torch.equal(attention.o_proj.weight, parent_attention.o_proj.weight)


def test_fewer_query_heads_by_importance_per_group(parent, calibration):
    importance = head_contributions(parent, 3, calibration)
    expected = [2 * g + int(importance[2 * g + 1] > importance[2 * g]) for g in range(4)]  # one of two per KV head
    child = derive(parent, {3: {"num_attention_heads": 4}}, calibration=calibration)
    attention, parent_attention = child.model.layers[3].self_attn, parent.model.layers[3].self_attn
    assert child.derive_record.sub_blocks[0].kept["query_heads"] == expected
    assert torch.equal(attention.q_proj.weight, heads(parent_attention.q_proj.weight, expected))
    assert torch.equal(attention.o_proj.weight, heads(parent_attention.o_proj.weight, expected, dim=1))
    assert torch.equal(attention.k_proj.weight, parent_attention.k_proj.weight)


def test_fewer_groups_keep_whole_groups(parent, calibration):
    """Half the query heads and half the KV heads at the same group size: whole groups go."""
    child = derive(parent, {0: {"num_attention_heads": 4, "num_key_value_heads": 2}}, init="truncate")
    attention, parent_attention = child.model.layers[0].self_attn, parent.model.layers[0].self_attn
    assert torch.equal(attention.k_proj.weight, heads(parent_attention.k_proj.weight, [0, 1]))
    assert torch.equal(attention.q_proj.weight, heads(parent_attention.q_proj.weight, [0, 1, 2, 3]))
    importance = head_contributions(parent, 0, calibration).reshape(4, 2).sum(dim=1)
    kept = sorted(torch.topk(importance, 2).indices.tolist())
    child = derive(parent, {0: {"num_attention_heads": 4, "num_key_value_heads": 2}}, calibration=calibration)
    attention = child.model.layers[0].self_attn
    assert torch.equal(attention.v_proj.weight, heads(parent_attention.v_proj.weight, kept))
    query_heads = [2 * g + i for g in kept for i in range(2)]
    assert torch.equal(attention.o_proj.weight, heads(parent_attention.o_proj.weight, query_heads, dim=1))


@pytest.mark.parametrize("sub_block", ["attention", "mlp"])
def test_linear_least_squares_is_the_best_linear_map(parent, calibration, sub_block):
    layer = parent.model.layers[1]
    module = layer.self_attn if sub_block == "attention" else layer.mlp
    inputs, outputs = [], []
    pre = module.register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append((args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True,
    )
    post = module.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        parent(calibration)
    pre.remove()
    post.remove()
    x = torch.cat([t.reshape(-1, 64) for t in inputs]).double()
    y = torch.cat([t.reshape(-1, 64) for t in outputs]).double()
    expected = torch.linalg.lstsq(x, y).solution.T
    child = derive(parent, {1: {"skip": [f"{sub_block}_replaced_by_linear"]}}, calibration=calibration)
    name = "self_attn.linear_attn" if sub_block == "attention" else "mlp.linear_mlp"
    weight = child.model.layers[1].get_submodule(name).weight.double()
    torch.testing.assert_close(weight, expected, atol=1e-4, rtol=1e-4)
    # the fit is the least-squares optimum: its residual is no larger than the parent-derived product's
    from_parent = derive(parent, {1: {"skip": [f"{sub_block}_replaced_by_linear"]}}, init="from_parent")
    other = from_parent.model.layers[1].get_submodule(name).weight.double()
    assert (x @ weight.T - y).norm() <= (x @ other.T - y).norm()


def test_linear_from_parent_products(parent):
    child = derive(
        parent, {2: {"skip": ["attention_replaced_by_linear", "mlp_replaced_by_linear"]}}, init="from_parent"
    )
    attention, mlp = parent.model.layers[2].self_attn, parent.model.layers[2].mlp
    value = torch.cat([heads(attention.v_proj.weight, [h // 2]) for h in range(8)])  # KV head of each query head
    torch.testing.assert_close(
        child.model.layers[2].self_attn.linear_attn.weight, attention.o_proj.weight @ value, atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(
        child.model.layers[2].mlp.linear_mlp.weight, mlp.down_proj.weight @ mlp.up_proj.weight, atol=1e-6, rtol=1e-6
    )
    assert child.model.layers[2].input_layernorm.weight is not None  # a linear sub-block keeps its norm, copied
    assert torch.equal(child.model.layers[2].input_layernorm.weight, parent.model.layers[2].input_layernorm.weight)


def test_random_is_the_architectures_own_initialisation(parent):
    child = derive(parent, {1: {"intermediate_size": 40}}, init="random", seed=5)
    again = derive(parent, {1: {"intermediate_size": 40}}, init="random", seed=5)
    other_seed = derive(parent, {1: {"intermediate_size": 40}}, init="random", seed=6)
    weight = child.model.layers[1].mlp.up_proj.weight
    assert torch.equal(weight, again.model.layers[1].mlp.up_proj.weight)
    assert not torch.equal(weight, other_seed.model.layers[1].mlp.up_proj.weight)
    assert child.derive_record.tensors["model.layers.1.mlp.up_proj.weight"].how == "ffn:random"
    assert weight.std().item() == pytest.approx(child.config.initializer_range, rel=0.2)


def test_experts_kept_by_router_usage():
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    config = GptOssConfig(
        hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, num_local_experts=6, num_experts_per_tok=2, vocab_size=64, layer_types=["full_attention"] * 2,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    parent = GptOssForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in parent.parameters():  # spread router logits so that routing depends on the input
            parameter.normal_(0, 0.5)
    calibration = torch.randint(0, 64, (6, 16), generator=torch.Generator().manual_seed(0))
    chosen = []
    router = parent.model.layers[1].mlp.router
    handle = router.register_forward_hook(lambda m, a, out: chosen.append(out[-1].reshape(-1)))
    with torch.no_grad():
        parent(calibration)
    handle.remove()
    counts = torch.bincount(torch.cat(chosen), minlength=6).double()
    expected = sorted(torch.sort(-counts, stable=True).indices[:3].tolist())
    child = derive(parent, {1: {"num_local_experts": 3}}, calibration=calibration)
    assert child.derive_record.sub_blocks[0].kept["experts"] == expected
    experts, parent_experts = child.model.layers[1].mlp.experts, parent.model.layers[1].mlp.experts
    assert torch.equal(experts.gate_up_proj, parent_experts.gate_up_proj[expected])
    assert torch.equal(experts.down_proj_bias, parent_experts.down_proj_bias[expected])
    assert torch.equal(child.model.layers[1].mlp.router.weight, router.weight[expected])
    assert torch.equal(child.model.layers[1].mlp.router.bias, router.bias[expected])


def test_record_names_every_tensor(parent, calibration, tmp_path):
    child = derive(parent, {1: {"intermediate_size": 40, "skip": ["attention"]}}, calibration=calibration)
    assert set(child.derive_record.tensors) == set(child.state_dict())
    child.derive_record.save(tmp_path)
    loaded = DeriveRecord.load(tmp_path)
    assert loaded.tensors["model.layers.1.mlp.down_proj.weight"].how == "ffn:importance"
    assert [(e.layer, e.slot, e.kind) for e in loaded.sub_blocks] == [(1, "attention", None), (1, "mlp", "ffn")]


def test_the_mode_functions_on_hand_written_tensors():
    from transformers.heterogeneity.derivation import init_modes

    assert init_modes.keep_most_important(torch.tensor([1.0, 3.0, 3.0, 0.0, 2.0]), 3).tolist() == [1, 2, 4]
    assert init_modes.keep_most_important(torch.tensor([5.0, 5.0, 5.0]), 2).tolist() == [0, 1]  # ties: lower index
    assert init_modes.keep_first(5, 2).tolist() == [0, 1]
    rows = torch.arange(12.0).reshape(6, 2)  # three heads of two rows
    assert init_modes.select_heads(rows, torch.tensor([2, 0]), 2, dim=0).tolist() == [[8, 9], [10, 11], [0, 1], [2, 3]]
    assert init_modes.select_heads(rows.T, torch.tensor([1]), 2, dim=1).tolist() == [[4, 6], [5, 7]]
    kv = torch.tensor([[1.0], [2.0], [3.0], [5.0]])  # four KV heads of one row each -> two
    assert init_modes.average_kv_heads(kv, 2, 1).tolist() == [[1.5], [4.0]]
    assert init_modes.first_kv_heads(4, 2).tolist() == [0, 2]
    query_importance = torch.tensor([1.0, 1.0, 0.0, 3.0, 2.0, 2.0, 1.0, 0.0])  # two query heads per KV head
    assert init_modes.important_kv_heads(query_importance, 4, 2).tolist() == [1, 2]
    assert init_modes.kept_query_heads(2, 4, 2, query_importance).tolist() == [0, 3, 4, 5]  # a tie: the lower
    assert init_modes.kept_groups(4, 2, query_importance).tolist() == [1, 2]
    weight = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = x @ weight.T
    torch.testing.assert_close(init_modes.linear_from_least_squares(x.T @ x, x.T @ y, ridge=0.0), weight)
