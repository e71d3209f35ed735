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
"""Planning a child's initialisation, sub-block by sub-block.

`plan_child` compares every sub-block slot of the child with the parent's (`layers.py`) and says what to do with it:
copy it (nothing changed: bit for bit), drop it (the child skips it), or initialise it with the init mode of its kind
(`configs.INIT_MODES`); `statistics_request` says which parent activations those modes read. `child_init.py` carries
the plans out.

What is a change is read from the modules, not from config attributes: an attention's geometry (query heads, KV
heads, head size, from its projections), an FFN's width (the output projection's input), a MoE's expert count. An
attribute that changes no shape (`hidden_act`) leaves the weights copied. A change no mode can initialise from the
parent (another head size, more heads, a sub-block the parent does not have) needs `random` for its kind, asked
explicitly, so that no sub-block is silently random.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..inspection import _expert_modules
from .configs import DeriveError, InitConfig
from .layers import Slot, decoder_layers, layer_slots, model_spec, slot_state
from .statistics import StatisticsRequest


__all__ = [
    "COPY",
    "DROP",
    "INIT",
    "SlotPlan",
    "attention_geometry",
    "expert_router",
    "plan_child",
    "statistics_request",
]

COPY, DROP, INIT = "copy", "drop", "init"


@dataclass
class SlotPlan:
    """What happens to one sub-block slot of one layer."""

    layer_idx: int
    slot: Slot
    parent_layer: nn.Module
    child_layer: nn.Module
    parent_prefix: str
    child_prefix: str
    action: str
    kind: str | None = None
    mode: str | None = None
    change: str = ""
    # Units of the parent the child keeps, filled when the init runs.
    kept: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str]:
        return self.layer_idx, self.slot.name

    @property
    def where(self) -> str:
        return f"Layer {self.layer_idx} {self.slot.name}"

    def parent_main(self) -> nn.Module:
        return self.parent_layer.get_submodule(self.slot.main)

    def child_main(self) -> nn.Module:
        return self.child_layer.get_submodule(self.slot.main)


# ----------------------------------------------------------------------------------------------------------------------
# Planning


def plan_child(parent: nn.Module, child: nn.Module, init: InitConfig) -> list[SlotPlan]:
    """One plan per sub-block slot of every layer; raises `DeriveError` for a change its mode cannot initialise."""
    spec = model_spec(parent)
    plans = []
    for layer_idx, (parent_layer, child_layer) in enumerate(
        zip(decoder_layers(parent, spec), decoder_layers(child, spec))
    ):
        plans.extend(plan_layer(layer_idx, parent_layer, child_layer, layer_slots(spec), init))
    return plans


def plan_layer(
    layer_idx: int,
    parent_layer: tuple[str, nn.Module],
    child_layer: tuple[str, nn.Module],
    slots: tuple[Slot, ...],
    init: InitConfig,
) -> list[SlotPlan]:
    """The plans of one layer's slots; `parent_layer` and `child_layer` are `(qualified name, module)`."""
    plans = []
    for slot in slots:
        plan = SlotPlan(layer_idx, slot, parent_layer[1], child_layer[1], parent_layer[0], child_layer[0], COPY)
        _classify(plan)
        if plan.action == INIT:
            plan.mode = getattr(init, plan.kind)
            if plan.change.startswith(_RANDOM_ONLY) and plan.mode != "random":
                raise DeriveError(
                    f"{plan.where}: {plan.change[len(_RANDOM_ONLY) :]} cannot be initialised from the parent's "
                    f"weights; pass init={{'{plan.kind}': 'random'}} to initialise it randomly."
                )
        plans.append(plan)
    return plans


_RANDOM_ONLY = "random only: "


def _classify(plan: SlotPlan) -> None:
    parent_state, child_state = slot_state(plan.parent_layer, plan.slot), slot_state(plan.child_layer, plan.slot)
    parent_main, child_main = plan.parent_main(), plan.child_main()
    if child_state == "skipped":
        plan.action, plan.change = (COPY, "") if parent_state == "skipped" else (DROP, f"{parent_state} -> skipped")
        return
    if child_state == "linear":
        if parent_state == "linear":
            return  # copied
        plan.action, plan.kind = INIT, "linear"
        plan.change = f"{parent_state} -> linear"
        if parent_state == "skipped":
            plan.change = f"{_RANDOM_ONLY}a linear map where the parent's sub-block is skipped"
        return
    kind = _stock_kind(child_main)
    if parent_state != "stock" or type(parent_main) is not type(child_main):
        plan.action, plan.kind = INIT, kind
        plan.change = f"{_RANDOM_ONLY}a {type(child_main).__name__} where the parent has a {parent_state} sub-block"
        return
    plan.kind, plan.change = _stock_change(kind, parent_main, child_main)
    if plan.change:
        plan.action = INIT
    elif not _same_shapes(parent_main, child_main):
        plan.action, plan.change = INIT, f"{_RANDOM_ONLY}parameter shapes differ from the parent's"


def _stock_kind(module: nn.Module) -> str:
    if attention_geometry(module) is not None:
        return "attention_heads"
    if _expert_modules(module):
        return "experts"
    return "ffn"


def _stock_change(kind: str, parent: nn.Module, child: nn.Module) -> tuple[str, str]:
    """The init kind of two stock sub-blocks of one class, and what differs ("" when no shape changes)."""
    if kind == "attention_heads":
        (heads, kv, head_dim), (new_heads, new_kv, new_head_dim) = (
            attention_geometry(parent),
            attention_geometry(child),
        )
        if (heads, kv, head_dim) == (new_heads, new_kv, new_head_dim):
            return kind, ""
        change = f"heads {heads} -> {new_heads}, KV heads {kv} -> {new_kv}, head_dim {head_dim} -> {new_head_dim}"
        if head_dim == new_head_dim and heads == new_heads and new_kv < kv and kv % new_kv == 0:
            return "kv_heads", change
        same_groups = new_kv == kv or (new_kv < kv and heads // kv == new_heads // new_kv)
        if head_dim == new_head_dim and new_heads < heads and new_heads % new_kv == 0 and same_groups:
            return kind, change
        return kind, _RANDOM_ONLY + change
    if kind == "experts":
        count, new_count = expert_count(parent), expert_count(child)
        if count == new_count:
            return kind, ""
        change = f"experts {count} -> {new_count}"
        return kind, change if new_count < count else _RANDOM_ONLY + change
    width, new_width = _ffn_width(parent), _ffn_width(child)
    if width is None or new_width is None or width == new_width:
        return kind, ""
    return kind, f"intermediate_size {width} -> {new_width}"


def attention_geometry(module: nn.Module) -> tuple[int, int, int] | None:
    """(query heads, KV heads, head size) of an attention with `q_proj` / `k_proj` / `v_proj` / `o_proj`."""
    projections = [getattr(module, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    head_dim = getattr(module, "head_dim", None)
    if not all(isinstance(p, nn.Linear) for p in projections) or not isinstance(head_dim, int):
        return None
    return projections[0].out_features // head_dim, projections[1].out_features // head_dim, head_dim


def _ffn_width(module: nn.Module) -> int | None:
    down = getattr(module, "down_proj", None)
    return down.in_features if isinstance(down, nn.Linear) else None


def expert_count(module: nn.Module) -> int:
    return _expert_modules(module)[0].num_experts


def expert_router(module: nn.Module) -> nn.Module:
    """The module of a MoE that scores the experts: the one child whose `weight` is `[num_experts, hidden]`."""
    count = expert_count(module)
    experts = _expert_modules(module)[0]
    for child in module.modules():
        weight = getattr(child, "weight", None)
        if (
            child is not experts
            and isinstance(weight, torch.Tensor)
            and weight.dim() == 2
            and weight.shape[0] == count
        ):
            return child
    raise DeriveError(f"{type(module).__name__} has no router with a [{count}, hidden] weight.")


def _same_shapes(parent: nn.Module, child: nn.Module) -> bool:
    parent_shapes = {name: p.shape for name, p in parent.named_parameters()}
    return parent_shapes == {name: p.shape for name, p in child.named_parameters()}


def statistics_request(plans: list[SlotPlan], init: InitConfig) -> StatisticsRequest:
    """What the planned modes read from the parent's activations."""
    request = StatisticsRequest()
    for plan in plans:
        if plan.action != INIT or plan.mode == "random" or not init.needs_calibration(plan.kind):
            continue
        parent_main = plan.parent_main()
        if plan.kind == "ffn":
            request.ffn[plan.key] = parent_main.down_proj
        elif plan.kind in ("kv_heads", "attention_heads"):
            request.heads[plan.key] = (parent_main.o_proj, attention_geometry(parent_main)[2])
        elif plan.kind == "linear":
            request.least_squares[plan.key] = parent_main
        elif plan.kind == "experts":
            router = expert_router(parent_main)
            request.experts[plan.key] = (router, _experts_per_token(parent_main, router))
    return request


def _experts_per_token(module: nn.Module, router: nn.Module) -> int:
    for owner in (router, module):
        for name in ("top_k", "num_experts_per_tok"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                return value
    raise DeriveError(f"{type(module).__name__}: cannot tell how many experts the router picks per token.")
