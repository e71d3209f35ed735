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
"""Carrying out the plans of `planning.py`: every tensor of the child copied from the parent or made by its init mode.

Copies are bit for bit (`Tensor.copy_` of the parent's value, in the same dtype). Changed sub-blocks get what their
mode computes (`init_modes.py`) from the parent's tensors and activation statistics; `random` keeps the child's own
initialisation (the architecture's `_init_weights`, seeded). Each tensor's origin goes into the provenance record.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..inspection import _expert_modules
from . import init_modes
from .configs import DeriveError
from .planning import COPY, DROP, SlotPlan, attention_geometry, expert_count, expert_router
from .records import DeriveRecord, SubBlockRecord
from .statistics import ActivationStatistics


__all__ = ["initialize_child", "initialize_parameters"]

# A changed sub-block's new tensors: parameter name (relative to the sub-block) -> (value, parent tensors it came from).
NewTensors = dict[str, tuple[torch.Tensor, list[str]]]


@torch.no_grad()
def initialize_child(
    parent: nn.Module,
    child: nn.Module,
    plans: list[SlotPlan],
    statistics: ActivationStatistics,
    record: DeriveRecord,
) -> None:
    """Fills every parameter of `child` from `parent` following `plans` and records how each was made.

    Raises:
        DeriveError: a parameter of the child has no counterpart in the parent, or a sub-block holds a parameter its
            init mode does not know how to map.
    """
    parent_parameters = dict(parent.named_parameters(remove_duplicate=False))
    child_parameters = dict(child.named_parameters(remove_duplicate=False))
    initialize_parameters(plans, parent_parameters, child_parameters, statistics, record)


@torch.no_grad()
def initialize_parameters(
    plans: list[SlotPlan],
    parent_parameters: dict[str, nn.Parameter],
    child_parameters: dict[str, nn.Parameter],
    statistics: ActivationStatistics,
    record: DeriveRecord,
) -> None:
    """Carries out `plans` on the child's parameters (by qualified name, of a model or of one layer) and copies the
    parameters that no slot holds (embeddings, final norm, LM head: model-level, never per layer)."""
    handled: set[str] = set()
    for plan in plans:
        members = [f"{plan.child_prefix}.{member}." for member in plan.slot.members]
        in_slot = [name for name in child_parameters if name.startswith(tuple(members))]
        handled.update(in_slot)
        if plan.action == COPY:
            for name in in_slot:
                _copy(name, _parent_name(plan, name), child_parameters, parent_parameters, record)
            continue
        sub_block = record.add_sub_block(SubBlockRecord(plan.layer_idx, plan.slot.name, plan.change))
        if plan.action == DROP:
            continue
        main = f"{plan.child_prefix}.{plan.slot.main}."
        for name in in_slot:  # the slot's norms: copied where the parent has them, else the child's own init
            if not name.startswith(main) and _parent_name(plan, name) in parent_parameters:
                _copy(name, _parent_name(plan, name), child_parameters, parent_parameters, record)
        new_tensors = _INITS[plan.kind](plan, statistics) if plan.mode != "random" else {}
        how = f"{plan.kind}:{plan.mode}"
        parent_main = f"{plan.parent_prefix}.{plan.slot.main}."
        for name in in_slot:
            if name.startswith(main) or _parent_name(plan, name) not in parent_parameters:
                value, sources = new_tensors.get(name[len(main) :], (None, []))
                if value is not None:
                    child_parameters[name].copy_(value.to(child_parameters[name].dtype))
                record.made(name, how, [parent_main + source for source in sources], sub_block)
        entry = record.sub_blocks[sub_block]
        entry.kind, entry.mode = plan.kind, plan.mode
        entry.kept = {unit: value.tolist() for unit, value in plan.kept.items()}
    for name in child_parameters:
        if name not in handled:
            _copy(name, name, child_parameters, parent_parameters, record)


def _parent_name(plan: SlotPlan, child_name: str) -> str:
    return plan.parent_prefix + child_name[len(plan.child_prefix) :]


def _copy(name: str, source: str, child: dict, parent: dict, record: DeriveRecord) -> None:
    if source not in parent or parent[source].shape != child[name].shape:
        found = "missing" if source not in parent else f"of shape {tuple(parent[source].shape)}"
        raise DeriveError(
            f"Child tensor {name} {tuple(child[name].shape)} has no counterpart in the parent ({source} is {found})."
        )
    child[name].copy_(parent[source])
    record.copied(name, source)


def _ffn(plan: SlotPlan, statistics: ActivationStatistics) -> NewTensors:
    """Channels kept by importance or truncation; a wider child keeps every parent channel, and its new channels start
    with a zero output column so that the sub-block computes what the parent's did."""
    parent, child = plan.parent_main(), plan.child_main()
    width, new_width = parent.down_proj.in_features, child.down_proj.in_features
    if plan.mode == "importance" and new_width < width:
        importance = init_modes.channel_importance(statistics.ffn[plan.key], parent.down_proj.weight)
        kept = init_modes.keep_most_important(importance, new_width)
    else:
        kept = init_modes.keep_first(width, min(width, new_width))
    plan.kept["channels"] = kept
    child_parameters = dict(child.named_parameters())
    new_tensors = {}
    for name, value in parent.named_parameters():
        if name == "down_proj.weight":
            dim = 1
        elif name.startswith("down_proj."):
            new_tensors[name] = (value, [name])  # the output bias
            continue
        elif value.shape[0] == width:
            dim = 0
        else:
            raise DeriveError(f"{plan.where}: do not know how {name} {tuple(value.shape)} maps to FFN channels.")
        selected = value.index_select(dim, kept.to(value.device))
        if new_width > width:
            widened = torch.zeros_like(child_parameters[name]) if dim == 1 else child_parameters[name].clone()
            widened.narrow(dim, 0, width).copy_(selected)
            selected = widened
        new_tensors[name] = (selected, [name])
    return new_tensors


def _attention(plan: SlotPlan, statistics: ActivationStatistics) -> NewTensors:
    """Fewer KV heads (averaged, first or most important of each group) or fewer query heads (per group, or whole
    groups), by `init_modes`; query projection rows, output projection columns and per-head parameters (sinks) follow
    the kept query heads, key and value projections the kept KV heads."""
    parent, child = plan.parent_main(), plan.child_main()
    heads, kv_heads, head_dim = attention_geometry(parent)
    new_heads, new_kv_heads, _ = attention_geometry(child)
    importance = None
    if plan.mode == "importance":
        importance = init_modes.head_importance(statistics.heads[plan.key])
    kept_kv: torch.Tensor | None
    if plan.kind == "kv_heads":
        query_heads = torch.arange(heads)
        if plan.mode == "average":
            kept_kv = None
            plan.kept["kv_head_groups"] = torch.arange(kv_heads).reshape(new_kv_heads, -1)
        elif plan.mode == "first":
            kept_kv = init_modes.first_kv_heads(kv_heads, new_kv_heads)
        else:
            kept_kv = init_modes.important_kv_heads(importance, kv_heads, new_kv_heads)
    elif new_kv_heads == kv_heads:
        kept_kv = torch.arange(kv_heads)
        query_heads = init_modes.kept_query_heads(kv_heads, heads // kv_heads, new_heads // kv_heads, importance)
    else:
        kept_kv = init_modes.kept_groups(kv_heads, new_kv_heads, importance)
        per_group = heads // kv_heads
        query_heads = (kept_kv[:, None] * per_group + torch.arange(per_group)[None, :]).reshape(-1)
    plan.kept["query_heads"] = query_heads
    if kept_kv is not None:
        plan.kept["kv_heads"] = kept_kv
    child_shapes = {name: p.shape for name, p in child.named_parameters()}
    new_tensors = {}
    for name, value in parent.named_parameters():
        projection = name.partition(".")[0]
        if projection == "q_proj":
            new_value = init_modes.select_heads(value, query_heads, head_dim, 0)
        elif projection in ("k_proj", "v_proj"):
            if kept_kv is None:
                new_value = init_modes.average_kv_heads(value, new_kv_heads, head_dim)
            else:
                new_value = init_modes.select_heads(value, kept_kv, head_dim, 0)
        elif name == "o_proj.weight":
            new_value = init_modes.select_heads(value, query_heads, head_dim, 1)
        elif value.dim() == 1 and value.shape[0] == heads and projection != "o_proj":
            new_value = value.index_select(0, query_heads.to(value.device))  # one value per query head (sinks)
        elif child_shapes.get(name) == value.shape:
            new_value = value  # q/k norms over the head size, output bias
        else:
            raise DeriveError(f"{plan.where}: do not know how {name} {tuple(value.shape)} maps to attention heads.")
        new_tensors[name] = (new_value, [name])
    return new_tensors


def _linear(plan: SlotPlan, statistics: ActivationStatistics) -> NewTensors:
    """The linear map by least squares on the parent sub-block's calibration inputs and outputs, or from the parent's
    value/output (attention) or up/down (MLP) projections."""
    parent, child = plan.parent_main(), plan.child_main()
    name = f"{child.linear_name}.weight"
    if plan.mode == "least_squares":
        xtx, xty = statistics.least_squares[plan.key]
        return {name: (init_modes.linear_from_least_squares(xtx, xty), [])}
    geometry = attention_geometry(parent)
    if geometry is not None:
        weight = init_modes.linear_attention_from_parent(
            parent.v_proj.weight, parent.o_proj.weight, geometry[0], geometry[2]
        )
        return {name: (weight, ["v_proj.weight", "o_proj.weight"])}
    if isinstance(getattr(parent, "up_proj", None), nn.Linear) and isinstance(
        getattr(parent, "down_proj", None), nn.Linear
    ):
        weight = init_modes.linear_mlp_from_parent(parent.up_proj.weight, parent.down_proj.weight)
        return {name: (weight, ["up_proj.weight", "down_proj.weight"])}
    raise DeriveError(
        f"{plan.where}: init mode 'from_parent' needs an attention (v_proj, o_proj) or an MLP (up_proj, down_proj), "
        f"the parent has a {type(parent).__name__}; use init={{'linear': 'least_squares'}}."
    )


def _experts(plan: SlotPlan, statistics: ActivationStatistics) -> NewTensors:
    """The experts the router picks most often on calibration data (or the first ones): their weights and their rows of
    the router."""
    parent = plan.parent_main()
    count, new_count = expert_count(parent), expert_count(plan.child_main())
    if plan.mode == "importance":
        kept = init_modes.keep_most_important(statistics.experts[plan.key], new_count)
    else:
        kept = init_modes.keep_first(count, new_count)
    plan.kept["experts"] = kept
    owners = {id(module) for module in (expert_router(parent), *_expert_modules(parent))}
    per_expert = {
        f"{module_name}.{name}".lstrip(".")
        for module_name, module in parent.named_modules()
        if id(module) in owners
        for name, value in module.named_parameters(recurse=False)
        if value.shape[0] == count
    }
    child_shapes = {name: p.shape for name, p in plan.child_main().named_parameters()}
    new_tensors = {}
    for name, value in parent.named_parameters():
        if name in per_expert:
            new_tensors[name] = (value.index_select(0, kept.to(value.device)), [name])
        elif child_shapes.get(name) == value.shape:
            new_tensors[name] = (value, [name])  # shared experts and the like
        else:
            raise DeriveError(f"{plan.where}: do not know how {name} {tuple(value.shape)} maps to experts.")
    return new_tensors


_INITS: dict[str, Callable[[SlotPlan, ActivationStatistics], NewTensors]] = {
    "ffn": _ffn,
    "kv_heads": _attention,
    "attention_heads": _attention,
    "linear": _linear,
    "experts": _experts,
}
