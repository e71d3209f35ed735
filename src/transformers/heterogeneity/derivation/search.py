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
"""`search`: a child that picks one variant per layer, the best under budgets on parameters, KV cache, FLOPs or
latency (Puzzle, arXiv 2411.19146).

1. Library: every layer gets every variant of a list (`default_variants`: fewer KV heads, linear or skipped
   attention, narrower, linear or skipped MLP, and their combinations), each initialised from the parent by the init
   modes of `derive` and, optionally, trained by blockwise local distillation.
2. Scores: each variant replaces its layer in the parent, alone, and the KL divergence of the next-token distribution
   on calibration text is its score (`scoring.py`).
3. Costs: parameters, KV-cache bytes per token and FLOPs per token of each variant (`inspection.summarize_config`),
   and its measured latency when asked.
4. Choice: an exact mixed-integer program (`mip.py`) picks one variant per layer minimising the summed scores under
   the budgets; the child is assembled from the chosen variants (trained ones when the library was distilled).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ...modeling_utils import PreTrainedModel
from ...utils import logging
from ...utils.logging import tqdm
from ..configuration_utils import HeterogeneousConfigError, get_layer_overrides
from ..inspection import summarize_config
from .api import build_child, build_child_config, load_parent, save_child
from .calibration import load_calibration
from .child_init import initialize_child, initialize_parameters
from .configs import DeriveError, DistillationConfig, InitConfig, resolve_init
from .distillation import capture_layer_io, train_block
from .layers import decoder_layers, layer_slots, model_spec
from .mip import Budget, choose_variants, parse_budget, require_scipy
from .planning import plan_child, plan_layer, statistics_request
from .records import DeriveRecord
from .scoring import reference_log_probs, replacement_kl, time_layer
from .statistics import StatisticsRequest, collect_statistics


logger = logging.get_logger(__name__)

__all__ = ["SearchResult", "default_variants", "search"]

SEARCH_FILE, TABLE_FILE = "search.json", "search.md"
COST_NAMES = ("params", "kv_bytes", "flops")


@dataclass
class SearchResult:
    """The chosen child and everything the choice was made from."""

    child: PreTrainedModel
    per_layer_config: dict[int, dict[str, Any]]
    variants: list[dict[str, Any]]
    chosen: list[int]
    scores: list[list[float]]
    costs: dict[str, list[list[float]]]
    budgets: list[Budget]
    parent_totals: dict[str, float] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        return {name: sum(table[i][v] for i, v in enumerate(self.chosen)) for name, table in self.costs.items()}

    def table(self) -> str:
        """A Markdown table of the choice: per layer the variant, its score and its costs, then the totals."""
        names = list(self.costs)
        header = ["layer", "variant", "KL score", *names]
        rows = [
            [str(i), describe_variant(self.variants[v]), f"{self.scores[i][v]:.4g}"]
            + [f"{self.costs[name][i][v]:,.6g}" for name in names]
            for i, v in enumerate(self.chosen)
        ]
        totals = self.totals()
        rows.append(["total", "", f"{sum(self.scores[i][v] for i, v in enumerate(self.chosen)):.4g}"]
                    + [f"{totals[n]:,.6g} ({totals[n] / self.parent_totals[n]:.1%} of parent)" for n in names])  # fmt: skip
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append(f"\nBudgets: {', '.join(str(b) for b in self.budgets)}. Parent totals (decoder layers): "
                     + ", ".join(f"{n} {self.parent_totals[n]:,.6g}" for n in names) + ".")  # fmt: skip
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_layer_config": {str(i): overrides for i, overrides in sorted(self.per_layer_config.items())},
            "budgets": [str(budget) for budget in self.budgets],
            "variants": self.variants,
            "chosen": self.chosen,
            "scores": self.scores,
            "costs": self.costs,
            "parent_totals": self.parent_totals,
            "totals": self.totals(),
        }


def default_variants(config) -> list[dict[str, Any]]:
    """Every combination of an attention option (as is, half the KV heads, linear, skipped) and an MLP option (as is,
    3/4, 1/2 and 1/4 of the width, linear, skipped), for the sub-blocks the architecture has; `{}` first."""
    spec_skips = set(model_spec(config).skip_descriptors)
    kv_heads = _global(config, "num_key_value_heads")
    width = _global(config, "intermediate_size")
    attention = [{}]
    if isinstance(kv_heads, int) and kv_heads > 1 and kv_heads % 2 == 0:
        attention.append({"num_key_value_heads": kv_heads // 2})
    attention += [{"skip": [name]} for name in ("attention_replaced_by_linear", "attention") if name in spec_skips]
    mlp = [{}]
    if isinstance(width, int):
        multiple = 64 if width >= 1024 else 8
        for share in (0.75, 0.5, 0.25):
            narrower = max(multiple, round(width * share / multiple) * multiple)
            if narrower < width and {"intermediate_size": narrower} not in mlp:
                mlp.append({"intermediate_size": narrower})
    mlp += [{"skip": [name]} for name in ("mlp_replaced_by_linear", "mlp") if name in spec_skips]
    return [_combine(a, m) for a in attention for m in mlp]


def describe_variant(variant: Mapping[str, Any]) -> str:
    if not variant:
        return "parent"
    parts = [f"{name}={value}" for name, value in sorted(variant.items()) if name != "skip"]
    parts += [f"skip {name}" for name in variant.get("skip", [])]
    return ", ".join(parts)


def search(
    parent: str | os.PathLike | PreTrainedModel,
    budgets: Sequence[str | Budget],
    *,
    calibration: Any,
    variants: Sequence[Mapping[str, Any]] | None = None,
    init: InitConfig | str | Mapping[str, str] | None = None,
    distillation: DistillationConfig | bool | None = None,
    measure_latency: bool = False,
    tokenizer: Any = None,
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
) -> SearchResult:
    """Builds and scores a library of layer variants, picks one per layer under `budgets` and derives that child.

    Args:
        parent: as for `derive`.
        budgets: `"NAME=VALUE"` strings or `Budget`s: `params`, `kv_bytes`, `flops` (and `latency` with
            `measure_latency`), as a share of the parent's decoder layers (`"params=50%"`) or absolute.
        calibration: as for `derive`; required (the scores are measured on it).
        variants: the per-layer overrides to choose from (default: `default_variants`); `{}` (the parent's layer)
            is always among them.
        init, distillation, tokenizer, seed, dtype: as for `derive`; `distillation` trains every variant of the
            library before it is scored.
        measure_latency: time each variant's forward on a calibration batch, making `latency` a cost.
        output_dir: when given, the child, `derivation.json`, `search.json` and `search.md` are written there.

    Raises:
        DeriveError: no calibration, a bad budget or variant, or budgets no choice meets.
    """
    require_scipy()
    init_config = resolve_init(init)
    parsed = [budget if isinstance(budget, Budget) else parse_budget(budget) for budget in budgets]
    if not parsed:
        raise DeriveError("`search` needs at least one budget, e.g. 'params=50%'.")
    if any(budget.name == "latency" for budget in parsed) and not measure_latency:
        raise DeriveError("A latency budget needs measured latencies: pass measure_latency=True (--measure-latency).")
    if calibration is None:
        raise DeriveError("`search` scores each variant on calibration data: pass `calibration=`.")
    distillation_config = DistillationConfig() if distillation is True else (distillation or None)
    if output_dir is not None:
        from ..staging import check_destination

        check_destination(output_dir, what="searched checkpoint")
    parent_model, parent_name, tokenizer = load_parent(parent, tokenizer, dtype)
    data = load_calibration(calibration, tokenizer)
    variant_list = _with_parent(variants or default_variants(parent_model.config))
    configs, layer_overrides = _library_configs(parent_model.config, variant_list)
    costs = _costs(parent_model.config, configs, layer_overrides)
    spec = model_spec(parent_model)
    parent_layers = decoder_layers(parent_model, spec)
    num_layers = len(parent_layers)

    # Plan every (layer, variant) on the meta device, so that one pass over the calibration data measures all the
    # activations their modes read.
    request = StatisticsRequest()
    for layer_idx, variant_idx in _entries(configs):
        with torch.device("meta"):
            layer = spec.layer_cls(configs[layer_idx][variant_idx], layer_idx)
        _merge(request, statistics_request(_plan(parent_layers, layer_idx, layer, spec, init_config), init_config))
    statistics = collect_statistics(parent_model, request, data) if request else None
    reference = reference_log_probs(parent_model, data)
    captured = None
    if distillation_config is not None or measure_latency:
        batch_size = distillation_config.batch_size if distillation_config else data.batch_size
        captured = capture_layer_io(parent_model, dict(enumerate(m for _, m in parent_layers)), data, batch_size)

    scores = [[float("inf")] * len(variant_list) for _ in range(num_layers)]
    latency = [[0.0] * len(variant_list) for _ in range(num_layers)]
    trained: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for layer_idx, variant_idx in tqdm(list(_entries(configs)), desc="Scoring layer variants", unit="variant"):
        name, parent_layer = parent_layers[layer_idx]
        torch.manual_seed(seed + layer_idx)
        layer = spec.layer_cls(configs[layer_idx][variant_idx], layer_idx).to(parent_model.device, parent_model.dtype)
        plans = _plan(parent_layers, layer_idx, layer, spec, init_config)
        record = DeriveRecord(parent_name, {}, init_config.to_dict(), seed)
        initialize_parameters(
            plans,
            dict(parent_layer.named_parameters(prefix=name, remove_duplicate=False)),
            dict(layer.named_parameters(prefix=name, remove_duplicate=False)),
            statistics,
            record,
        )
        layer.eval()
        if distillation_config is not None and record.not_copied():
            parameters = dict(layer.named_parameters(prefix=name))
            train_block(layer, [parameters[n] for n in record.not_copied()], captured[layer_idx], distillation_config,
                        seed + layer_idx)  # fmt: skip
            trained[layer_idx, variant_idx] = {n: parameters[n].detach().cpu().clone() for n in record.not_copied()}
        scores[layer_idx][variant_idx] = (
            0.0 if variant_idx == 0 else replacement_kl(parent_model, name, layer, data, reference)
        )
        if measure_latency:
            latency[layer_idx][variant_idx] = time_layer(
                layer, captured[layer_idx].inputs[0], captured[layer_idx].kwargs[0]
            )
    if measure_latency:
        costs["latency"] = latency
    parent_totals = {cost: sum(table[i][0] for i in range(num_layers)) for cost, table in costs.items()}
    limits = {budget.name: budget.limit(parent_totals[budget.name]) for budget in parsed}
    chosen = choose_variants(scores, costs, limits, {budget.name: str(budget) for budget in parsed})

    per_layer_config = {i: layer_overrides[i][v] for i, v in enumerate(chosen) if layer_overrides[i][v]}
    child_config = build_child_config(parent_model.config, per_layer_config)
    child = build_child(parent_model, child_config, seed)
    record = DeriveRecord(
        parent_name,
        {str(i): o for i, o in sorted(per_layer_config.items())},
        init_config.to_dict(),
        seed,
        calibration=data.describe(),
    )
    initialize_child(parent_model, child, plan_child(parent_model, child, init_config), statistics, record)
    if distillation_config is not None:
        with torch.no_grad():
            parameters = dict(child.named_parameters())
            for layer_idx, variant_idx in enumerate(chosen):
                for tensor_name, value in trained.get((layer_idx, variant_idx), {}).items():
                    parameters[tensor_name].copy_(value)
                    record.tensors[tensor_name].distilled = True
        record.distillation = {**distillation_config.to_dict(), "library": True}
    child.eval()
    child.derive_record = record
    result = SearchResult(
        child, per_layer_config, variant_list, chosen, scores, costs, parsed,
        parent_totals,
    )  # fmt: skip
    if output_dir is not None:
        extra = {SEARCH_FILE: json.dumps(result.to_dict(), indent=1) + "\n", TABLE_FILE: result.table() + "\n"}
        save_child(child, output_dir, tokenizer=tokenizer, extra=extra)
    return result


def _global(config, name: str) -> Any:
    return config._getattr_without_heterogeneous_validation(name, None)


def _combine(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    combined = {**first, **{k: v for k, v in second.items() if k != "skip"}}
    skips = [*first.get("skip", []), *second.get("skip", [])]
    if skips:
        combined["skip"] = skips
    return combined


def _with_parent(variants: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The variants, checked, with `{}` (the parent's own layer) first."""
    checked = []
    for variant in variants:
        if not isinstance(variant, Mapping):
            raise DeriveError(f"A variant must be a mapping of per-layer overrides, got {variant!r}.")
        if dict(variant) not in checked:
            checked.append(dict(variant))
    return [{}] + [variant for variant in checked if variant]


def _library_configs(parent_config, variants: list[dict[str, Any]]):
    """For every layer and variant, the child config with that variant applied on top of the layer's own overrides
    (`None` where the architecture refuses the combination), and those overrides."""
    num_layers = parent_config.num_hidden_layers
    configs: list[list[Any]] = [[None] * len(variants) for _ in range(num_layers)]
    layer_overrides: list[list[dict[str, Any]]] = [[{}] * len(variants) for _ in range(num_layers)]
    for variant_idx, variant in enumerate(variants):
        for layer_idx in range(num_layers):
            overrides = _combine(get_layer_overrides(parent_config, layer_idx), variant)
            try:
                config = build_child_config(parent_config, {layer_idx: overrides})
            except HeterogeneousConfigError as error:
                if variant_idx == 0:
                    raise
                logger.info(f"Layer {layer_idx} cannot take variant {describe_variant(variant)}: {error}")
                continue
            config._attn_implementation = parent_config._attn_implementation
            configs[layer_idx][variant_idx], layer_overrides[layer_idx][variant_idx] = config, overrides
    if all(config is None for row in configs for config in row[1:]) and len(variants) > 1:
        raise DeriveError("No variant of the library can be built for any layer; check the variants.")
    return configs, layer_overrides


def _costs(parent_config, configs, layer_overrides) -> dict[str, list[list[float]]]:
    """Parameters, KV bytes and FLOPs per token of every (layer, variant). A layer's costs depend on what the parent's
    layer at that index is (NemotronH's block type, Llama4's MoE layers, a window) and on the overrides applied to it,
    so each distinct pair is summarized once."""
    costs = {name: [[float("inf")] * len(row) for row in configs] for name in COST_NAMES}
    dtype = _kv_dtype(parent_config)
    parent_layers = [replace(layer, layer_idx=0) for layer in summarize_config(parent_config, dtype=dtype).layers]
    summarized: dict[tuple, Any] = {}
    for layer_idx, row in enumerate(configs):
        for variant_idx, config in enumerate(row):
            if config is None:
                continue
            key = (parent_layers[layer_idx], repr(sorted(layer_overrides[layer_idx][variant_idx].items())))
            if key not in summarized:
                summarized[key] = summarize_config(config, dtype=dtype).layers[layer_idx]
            layer = summarized[key]
            costs["params"][layer_idx][variant_idx] = layer.num_parameters
            costs["kv_bytes"][layer_idx][variant_idx] = layer.kv_bytes_per_token
            costs["flops"][layer_idx][variant_idx] = layer.flops_per_token
    return costs


def _kv_dtype(config) -> torch.dtype:
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _entries(configs):
    for layer_idx, row in enumerate(configs):
        for variant_idx, config in enumerate(row):
            if config is not None:
                yield layer_idx, variant_idx


def _plan(parent_layers, layer_idx, layer, spec, init_config):
    name, parent_layer = parent_layers[layer_idx]
    return plan_layer(layer_idx, (name, parent_layer), (name, layer), layer_slots(spec), init_config)


def _merge(request: StatisticsRequest, other: StatisticsRequest) -> None:
    for field_name in ("ffn", "heads", "least_squares", "experts"):
        getattr(request, field_name).update(getattr(other, field_name))
