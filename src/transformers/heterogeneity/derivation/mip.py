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
"""Choosing one variant per layer under budgets: an exact mixed-integer program, solved by SciPy's HiGHS (`milp`).

Puzzle (arXiv 2411.19146, section 5) picks one block variant per layer so that the summed replacement scores are
best while the summed costs (parameters, KV cache, FLOPs, latency) stay within the budgets. With `x[i, v]` in {0, 1}
meaning "layer `i` takes variant `v`":

    minimise    sum_{i,v} score[i, v] * x[i, v]
    subject to  sum_v x[i, v] = 1                           for every layer i
                sum_{i,v} cost_k[i, v] * x[i, v] <= limit_k  for every budget k

HiGHS solves it exactly (branch and bound to a zero optimality gap), so the choice is the best one, not a heuristic's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .configs import DeriveError


__all__ = ["BUDGET_NAMES", "Budget", "choose_variants", "parse_budget"]

# Costs that budgets can bound, by name: what a layer variant holds or spends.
BUDGET_NAMES = {
    "params": "parameters",
    "kv_bytes": "KV-cache bytes per token",
    "flops": "FLOPs per token",
    "latency": "measured latency (ms per batch)",
}


@dataclass(frozen=True)
class Budget:
    """A limit on one summed cost: `value` itself, or `value` times the parent's total when `relative`."""

    name: str
    value: float
    relative: bool

    def limit(self, parent_total: float) -> float:
        return self.value * parent_total if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.name}={self.value * 100:g}%" if self.relative else f"{self.name}={self.value:g}"


def parse_budget(text: str) -> Budget:
    """`NAME=VALUE`: `params=50%` (a share of the parent's decoder layers' total) or `params=1.5e6` (absolute).

    Raises:
        DeriveError: unknown name or a value that is not a positive number.
    """
    name, separator, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not separator or name not in BUDGET_NAMES:
        raise DeriveError(
            f"Budget {text!r}: write NAME=VALUE with NAME one of {sorted(BUDGET_NAMES)} and VALUE a share of the "
            "parent's layers ('50%') or an absolute amount ('1.5e6')."
        )
    relative = value.endswith("%")
    number = value[:-1] if relative else value
    try:
        amount = float(number) / (100 if relative else 1)
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount):
        raise DeriveError(f"Budget {text!r}: {value!r} is not a number or a percentage.")
    if not amount > 0:
        raise DeriveError(f"Budget {text!r}: the value must be positive.")
    return Budget(name, amount, relative)


def require_scipy() -> None:
    """Raises a clear `ImportError` where SciPy (the `derive` extra), which solves the program, is missing: `search`
    asks before it loads and scores anything."""
    try:
        import scipy.optimize  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The budgeted search solves a mixed-integer program with SciPy, which is not installed: "
            "pip install 'transformers-heterogeneity[derive]' (or scipy>=1.9)."
        ) from error


def choose_variants(
    scores: Sequence[Sequence[float]],
    costs: Mapping[str, Sequence[Sequence[float]]],
    limits: Mapping[str, float],
    names: Mapping[str, str] | None = None,
) -> list[int]:
    """The variant index of every layer that minimises the summed score with every summed cost within its limit.

    Args:
        scores: `scores[i][v]`, lower is better; `inf` (or NaN) marks a variant that layer `i` cannot take.
        costs: per budget name, `costs[name][i][v]`.
        limits: per budget name, the most the chosen variants may sum to.
        names: how to call each budget in an error (e.g. `"params=50%"`).

    Raises:
        DeriveError: no choice meets the budgets; the message gives, for each budget, the least any choice needs.
    """
    require_scipy()
    import numpy as np  # installed with SciPy
    from scipy.optimize import Bounds, LinearConstraint, milp

    num_layers, num_variants = len(scores), len(scores[0])
    score = np.asarray(scores, dtype=float).reshape(-1)
    allowed = np.isfinite(score)
    objective = np.where(allowed, score, 0.0)
    equality = np.zeros((num_layers, num_layers * num_variants))
    for layer in range(num_layers):
        equality[layer, layer * num_variants : (layer + 1) * num_variants] = 1
    constraints = [LinearConstraint(equality, 1, 1)]
    budget_names = sorted(limits)
    if budget_names:
        matrix = np.stack([np.asarray(costs[name], dtype=float).reshape(-1) for name in budget_names])
        constraints.append(LinearConstraint(matrix, -np.inf, np.array([limits[name] for name in budget_names])))
    result = milp(
        objective,
        constraints=constraints,
        integrality=np.ones_like(objective),
        bounds=Bounds(0, allowed.astype(float)),
    )
    if result.status != 0 or result.x is None:
        raise DeriveError(_infeasible_message(scores, costs, limits, names or {}, allowed.reshape(num_layers, -1)))
    chosen = np.round(result.x).reshape(num_layers, num_variants)
    return [int(np.argmax(row)) for row in chosen]


def _infeasible_message(scores, costs, limits, names, allowed) -> str:
    import numpy as np

    parts = []
    for name in sorted(limits):
        table = np.where(allowed, np.asarray(costs[name], dtype=float), np.inf)
        least = float(table.min(axis=1).sum())
        label = names.get(name, name)
        parts.append(
            f"{label} allows {limits[name]:,.6g} {BUDGET_NAMES.get(name, name)}, the smallest choice needs {least:,.6g}"
        )
    alone = all(float(np.where(allowed, np.asarray(costs[n], dtype=float), np.inf).min(axis=1).sum()) <= limits[n]
                for n in limits)  # fmt: skip
    why = "each budget can be met alone, but not all at once" if alone else "a budget is below what any choice needs"
    return (
        f"No choice of one variant per layer meets the budget ({why}): {'; '.join(parts)}. Raise the budget or add "
        "smaller variants (skipped or linear sub-blocks, narrower FFNs, fewer KV heads)."
    )
