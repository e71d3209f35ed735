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
"""The init modes: how a changed sub-block of a child gets its weights from the parent's.

One mode is one small function on tensors, whose docstring is its definition; `child_init.py` decides which applies
to which sub-block and applies it. Weight layouts are those of `nn.Linear` (`[out_features, in_features]`): a
projection into heads holds one block of `head_dim` rows per head, and the output projection one block of `head_dim`
columns per query head; query head `h` reads KV head `h // (num_heads // num_kv_heads)` (grouped-query attention).

Sources of the definitions (facts, not code): NVIDIA Model-Optimizer `modelopt/torch/puzzletron/pruning/
pruning_utils.py` (`GQAInitMode.AverageKV` / `FirstKV` / `PruneKVHeads`, `MlpInitMode.Truncate` /
`PruneByActivationsLog`, `LinearInitMode.FromTeacher`), its `IndependentChannelContributionHook` (channel importance
as mean absolute activation times the norm of the weight column that carries it), and `tools/bypassed_training/
child_init.py` (expert removal by score; linear sub-blocks from the parent's value/output or up/down projections);
Minitron (Muralidharan et al., arXiv 2407.14679: width pruning of heads and FFN channels by activation importance on
calibration data).
"""

from __future__ import annotations

import torch


__all__ = [
    "average_kv_heads",
    "channel_importance",
    "first_kv_heads",
    "head_importance",
    "important_kv_heads",
    "keep_first",
    "keep_most_important",
    "kept_groups",
    "kept_query_heads",
    "linear_attention_from_parent",
    "linear_from_least_squares",
    "linear_mlp_from_parent",
    "select_heads",
]


# ----------------------------------------------------------------------------------------------------------------------
# Importance


def channel_importance(mean_abs_activation: torch.Tensor, output_weight: torch.Tensor) -> torch.Tensor:
    """Importance of each FFN channel: its mean absolute activation on the calibration tokens (the input of the output
    projection) times the L2 norm of the output-projection column that carries it to the residual stream, so a channel
    that fires strongly into a near-zero column counts for little (Model-Optimizer's independent channel contribution).

    Args:
        mean_abs_activation: `[intermediate_size]`, mean over tokens of `|a_j|`.
        output_weight: the output projection, `[hidden_size, intermediate_size]`.
    """
    return mean_abs_activation.float() * torch.linalg.vector_norm(output_weight.float(), dim=0)


def head_importance(mean_head_contribution: torch.Tensor) -> torch.Tensor:
    """Importance of each query head: the mean over calibration tokens of the L2 norm of what the head adds to the
    residual stream (`o_proj` applied to that head's attention output alone), Minitron's head importance measured
    after the output projection. The statistic is gathered by `statistics.py`; this is the identity, named so that
    the definition lives with the modes."""
    return mean_head_contribution.float()


def keep_first(size: int, kept: int) -> torch.Tensor:
    """Truncation: the first `kept` of `size` units (channels, heads, experts), in order."""
    _check_kept(size, kept)
    return torch.arange(kept)


def keep_most_important(importance: torch.Tensor, kept: int) -> torch.Tensor:
    """The `kept` units of highest importance, in their original order (so a child keeps the parent's unit order);
    ties go to the lower index."""
    _check_kept(importance.numel(), kept)
    order = torch.sort(-importance.double(), stable=True).indices  # stable: ties keep the lower index first
    return torch.sort(order[:kept]).values


# ----------------------------------------------------------------------------------------------------------------------
# Attention heads


def select_heads(weight: torch.Tensor, heads: torch.Tensor, head_dim: int, dim: int) -> torch.Tensor:
    """The blocks of `head_dim` rows (`dim=0`) or columns (`dim=1`) of the heads `heads`, in that order; biases are
    1-D and use `dim=0`."""
    index = (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1).to(weight.device)
    return weight.index_select(dim, index).contiguous()


def average_kv_heads(weight: torch.Tensor, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """AverageKV: child KV head `g` is the mean of the parent KV heads `g * n ... g * n + n - 1`, `n` being the
    parent/child KV-head ratio; those are exactly the parent KV heads that the query heads now reading head `g` read
    before. `weight` is a key or value projection (`[parent_kv_heads * head_dim, hidden]`) or its bias."""
    parent_kv_heads = weight.shape[0] // head_dim
    ratio = _group_ratio(parent_kv_heads, num_kv_heads)
    blocks = weight.reshape(num_kv_heads, ratio, head_dim, *weight.shape[1:])
    return blocks.float().mean(dim=1).to(weight.dtype).reshape(num_kv_heads * head_dim, *weight.shape[1:])


def first_kv_heads(parent_kv_heads: int, num_kv_heads: int) -> torch.Tensor:
    """FirstKV: child KV head `g` is parent KV head `g * n` (the first of the group it stands for)."""
    ratio = _group_ratio(parent_kv_heads, num_kv_heads)
    return torch.arange(num_kv_heads) * ratio


def important_kv_heads(query_head_importance: torch.Tensor, parent_kv_heads: int, num_kv_heads: int) -> torch.Tensor:
    """Child KV head `g` is the parent KV head, among the `n` it stands for (`g * n ... g * n + n - 1`), whose query
    heads add the most to the output (the sum of their `head_importance`). The query heads are unchanged: those that
    read another head of the group now read this one."""
    ratio = _group_ratio(parent_kv_heads, num_kv_heads)
    per_kv_head = query_head_importance.reshape(parent_kv_heads, -1).double().sum(dim=1)
    best_in_group = torch.argmax(per_kv_head.reshape(num_kv_heads, ratio), dim=1)  # first maximum on ties
    return torch.arange(num_kv_heads) * ratio + best_in_group


def kept_query_heads(
    num_kv_heads: int, parent_heads_per_group: int, heads_per_group: int, importance: torch.Tensor | None
) -> torch.Tensor:
    """Fewer query heads with the same KV heads: in every KV group, the `heads_per_group` query heads of highest
    importance (or the first ones when `importance` is `None`), so each kept query head still reads its own KV head."""
    kept = []
    for group in range(num_kv_heads):
        first = group * parent_heads_per_group
        if importance is None:
            in_group = keep_first(parent_heads_per_group, heads_per_group)
        else:
            in_group = keep_most_important(importance[first : first + parent_heads_per_group], heads_per_group)
        kept.append(first + in_group)
    return torch.cat(kept)


def kept_groups(parent_kv_heads: int, num_kv_heads: int, importance: torch.Tensor | None) -> torch.Tensor:
    """Fewer KV heads and query heads at the same group size: whole groups (one KV head and its query heads) are kept,
    those whose query heads add the most to the output (or the first ones when `importance` is `None`)."""
    if importance is None:
        return keep_first(parent_kv_heads, num_kv_heads)
    return keep_most_important(importance.reshape(parent_kv_heads, -1).double().sum(dim=1), num_kv_heads)


# ----------------------------------------------------------------------------------------------------------------------
# Linear replacements


def linear_from_least_squares(xtx: torch.Tensor, xty: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """The linear map `W` (as an `nn.Linear` weight, `[out, in]`) minimising `sum_t ||W x_t - y_t||^2` over the
    calibration tokens, where `x_t` is what the sub-block reads (its norm's output) and `y_t` what the parent's
    sub-block returns: `W = (X^T X + r I)^-1 X^T Y`, transposed, from the accumulated `X^T X` and `X^T Y`. The ridge
    `r` is `ridge` times the mean diagonal of `X^T X`; it only matters where calibration leaves a direction unseen."""
    xtx, xty = xtx.double(), xty.double()
    damping = ridge * xtx.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    system = xtx + damping * torch.eye(xtx.shape[0], dtype=torch.float64, device=xtx.device)
    return torch.linalg.solve(system, xty).T.contiguous()


def linear_attention_from_parent(
    value_weight: torch.Tensor, output_weight: torch.Tensor, num_heads: int, head_dim: int
) -> torch.Tensor:
    """The attention as it would be if every token attended only to itself: `W = W_o @ W_v'`, `W_v'` being the value
    projection with each KV head repeated for the query heads that read it (Model-Optimizer's `FromTeacher` mode)."""
    num_kv_heads = value_weight.shape[0] // head_dim
    repeated = value_weight.reshape(num_kv_heads, head_dim, -1).repeat_interleave(num_heads // num_kv_heads, dim=0)
    return (output_weight.double() @ repeated.reshape(num_heads * head_dim, -1).double()).to(value_weight.dtype)


def linear_mlp_from_parent(up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """The MLP with its activation (and gate) taken out: `W = W_down @ W_up` (Model-Optimizer's `FromTeacher` mode)."""
    return (down_weight.double() @ up_weight.double()).to(up_weight.dtype)


def _check_kept(size: int, kept: int) -> None:
    if not 0 < kept <= size:
        raise ValueError(f"cannot keep {kept} of {size} units")


def _group_ratio(parent_kv_heads: int, num_kv_heads: int) -> int:
    if num_kv_heads < 1 or parent_kv_heads % num_kv_heads:
        raise ValueError(f"{parent_kv_heads} parent KV heads cannot be grouped into {num_kv_heads}")
    return parent_kv_heads // num_kv_heads
