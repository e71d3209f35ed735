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
"""Tensor parallelism (`tp_plan`) of heterogeneous models: a layer that cannot be sharded is refused by name.

Upstream (transformers 5.23, `distributed/tensor_parallel.py`, `ColwiseParallel`) shards the query, key and value
projections column-wise into `tp_size` slices of their output, and each rank's attention reshapes its slice into
heads of `head_dim` (`modeling_llama.py`: `.view(hidden_shape)`). When a layer's KV heads (or attention heads) do not
divide by `tp_size`, a slice is not a whole number of heads, and the first forward fails deep inside attention
(`shape '[2, 9, -1, 16]' is invalid for input of size 144` for one KV head on two ranks). With per-layer heads, one
layer is enough to break a model whose global values divide, so the model is refused while it is built, naming the
layer. Feed-forward widths need not divide: upstream gives the last rank a shorter slice of the column-wise up/gate
projections and of the row-wise down projection (`ColwiseParallel` docstring), which the tests check against one
process with an odd width.
"""

from __future__ import annotations

from ..configuration_utils import PreTrainedConfig
from .cache_utils import kv_cache_bytes
from .configuration_utils import HeterogeneousConfigError


__all__ = ["TensorParallelError", "check_tensor_parallel"]

# Projections whose output holds heads, as upstream's `get_kv_heads_per_rank` recognises them (fused ones included),
# and the attribute that counts those heads.
_HEAD_PROJECTIONS = {
    "k_proj": "num_key_value_heads",
    "v_proj": "num_key_value_heads",
    "q_proj": "num_attention_heads",
    "qkv_proj": "num_key_value_heads",
    "query_key_value": "num_key_value_heads",
}
_COLUMN_WISE_STYLES = frozenset({"colwise", "packed_colwise"})


class TensorParallelError(HeterogeneousConfigError):
    """A layer of a heterogeneous model cannot be split over the requested tensor-parallel size."""


def check_tensor_parallel(config: PreTrainedConfig) -> None:
    """Refuses a heterogeneous config whose attention heads some layer cannot split over `tp_size` ranks.

    `from_pretrained(..., tp_plan=..., tp_size=...)` (or `distributed_config=`) sets `config.distributed_config`
    before the model is built, which is when this runs. Only layers that hold attention are checked (a skipped or
    linear attention has no heads), and only the head counts that the effective plan shards column-wise; a plan rule
    is taken to apply to every layer, as upstream's plans name the layers with `*`.

    Raises:
        TensorParallelError: naming the first such layer, the attribute, its value and the TP size.
    """
    distributed_config = getattr(config, "distributed_config", None)
    tp_size = getattr(distributed_config, "tp_size", None) or 1
    if tp_size <= 1:
        return
    attributes = _sharded_head_attributes(_tp_plan(config, distributed_config))
    if not attributes:
        return
    for size in kv_cache_bytes(config):  # the layers that hold attention, with their own KV heads
        heads = {
            "num_key_value_heads": size.num_key_value_heads,
            "num_attention_heads": config.per_layer_config[size.layer_idx].num_attention_heads,
        }
        for name in sorted(attributes, reverse=True):  # KV heads first: they are the fewer
            value = heads[name]
            if value % tp_size:
                raise TensorParallelError(
                    f"Layer {size.layer_idx}: `{name}`={value} does not divide by the tensor-parallel size "
                    f"{tp_size}: each rank holds `{name} / tp_size` whole heads of that layer. Use a tp_size that "
                    "divides the heads of every layer that has attention."
                )


def _tp_plan(config: PreTrainedConfig, distributed_config) -> dict[str, str]:
    """The plan the model will use: the config's `base_model_tp_plan` updated by a dict `tp_plan`, as upstream's
    `_resolve_parallel_plans` merges them (an empty dict means no tensor parallelism)."""
    override = getattr(distributed_config, "tp_plan", None)
    plan = dict(config.base_model_tp_plan or {})
    if isinstance(override, dict):
        plan = {**plan, **override} if override else {}
    return plan


def _sharded_head_attributes(plan: dict[str, str]) -> set[str]:
    return {
        _HEAD_PROJECTIONS[key.rsplit(".", 1)[-1]]
        for key, style in plan.items()
        if style in _COLUMN_WISE_STYLES and key.rsplit(".", 1)[-1] in _HEAD_PROJECTIONS
    }
