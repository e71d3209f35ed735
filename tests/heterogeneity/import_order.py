"""Import-order matrix: installing this package must never break a first import of Transformers.

Each case runs in a fresh interpreter, as a user's script would: it makes one first import (a public name of
`transformers`, a submodule, or a library built on Transformers), then imports the rest of its group, then builds a
heterogeneous model and checks it. A case that fails with the package installed is run again with the automatic
activation turned off; it is a regression unless the same imports fail the same way there too (an optional
dependency missing on this machine, say).

`test_import_order.py` runs the fast subset in `make test`; `python -m tests.heterogeneity.import_order --all` runs
every name of `transformers`' public import structure, grouped into cases (`all_cases`), in parallel processes, for
`.ci/run`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


ENV_VARIABLE = "TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE"

# The first imports of the scripts users actually write.
FAST_CASES = [
    ["from transformers import Trainer"],
    ["from transformers import TrainingArguments"],
    ["from transformers import PreTrainedModel"],
    ["from transformers import GenerationMixin"],
    ["from transformers import pipeline"],
    ["from transformers import AutoModelForCausalLM"],
    ["from transformers import AutoConfig"],
    ["from transformers import LlamaForCausalLM"],
    ["from transformers import DynamicCache"],
    ["import transformers.testing_utils"],
    ["import transformers.modeling_utils"],
    ["import transformers.generation"],
    ["import peft"],
    ["import accelerate"],
]

# Runs in the fresh interpreter: the imports in order, then (with the package active) a heterogeneous model built
# from a stock config, checked against the shapes its per_layer_config asks for, and the checkpoint families'
# registration. Prints one JSON line.
CASE_SCRIPT = r"""
import json, sys
statements = json.loads(sys.argv[1])
outcome = {"imports": {}}
for statement in statements:
    try:
        exec(statement, {})
        outcome["imports"][statement] = "ok"
    except BaseException as error:
        outcome["imports"][statement] = f"{type(error).__name__}: {error}"[:400]
if sys.argv[2] == "1":
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        config = LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100, per_layer_config={1: {"intermediate_size": 32, "num_key_value_heads": 1},
                                              2: {"skip": ["attention"]}},
        )
        model = LlamaForCausalLM(config)
        shapes = {name: list(p.shape) for name, p in model.named_parameters()}
        problems = []
        if shapes.get("model.layers.1.mlp.up_proj.weight") != [32, 64]:
            problems.append("layer 1 FFN width")
        if shapes.get("model.layers.1.self_attn.k_proj.weight") != [16, 64]:
            problems.append("layer 1 KV heads")
        if any(name.startswith("model.layers.2.self_attn.") for name in shapes):
            problems.append("layer 2 attention not skipped")
        logits = model(torch.tensor([[1, 2, 3]])).logits
        if logits.shape != (1, 3, 100) or not torch.isfinite(logits).all():
            problems.append("forward")
        if "nemotron-nas" not in CONFIG_MAPPING:
            problems.append("checkpoint families not registered")
        outcome["model"] = "; ".join(problems) or "ok"
    except BaseException as error:
        outcome["model"] = f"{type(error).__name__}: {error}"[:400]
print(json.dumps(outcome))
"""


@dataclass
class CaseResult:
    statements: list[str]
    imports: dict[str, str]  # with the package active
    model: str
    imports_without_package: dict[str, str] | None = None

    @property
    def problems(self) -> list[str]:
        found = []
        for statement, outcome in self.imports.items():
            if outcome == "ok":
                continue
            without = (self.imports_without_package or {}).get(statement)
            if without != outcome:
                found.append(f"`{statement}`: {outcome} (without the package: {without})")
        if self.model != "ok":
            found.append(f"heterogeneous model after `{self.statements[0]}`: {self.model}")
        return found


def _run(statements: list[str], active: bool, timeout: float) -> dict:
    env = {**os.environ, ENV_VARIABLE: "1" if active else "0"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", CASE_SCRIPT, json.dumps(statements), "1" if active else "0"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        hang = f"interpreter still running after {timeout:.0f} s"
        return {"imports": dict.fromkeys(statements, hang), "model": hang}
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        crash = f"interpreter exited with {result.returncode}: {result.stderr.strip()[-400:]}"
        return {"imports": dict.fromkeys(statements, crash), "model": crash}
    return json.loads(lines[-1])


def run_case(statements: list[str], timeout: float = 600) -> CaseResult:
    """Runs one case with the package active and, only if an import fails, again without it."""
    active = _run(statements, active=True, timeout=timeout)
    result = CaseResult(statements, active["imports"], active.get("model", "not run"))
    if any(outcome != "ok" for outcome in result.imports.values()):
        result.imports_without_package = _run(statements, active=False, timeout=timeout)["imports"]
    return result


def all_cases(chunk_size: int = 40) -> list[list[str]]:
    """Every name of `transformers`' public import structure, in cases: one per top-level module (`trainer`,
    `modeling_utils`, ...), and the names of model packages grouped by the kind of module defining them
    (`configuration_*`, `modeling_*`, `tokenization_*`, ...) in chunks of `chunk_size`. A case's first name is its
    first import; the others follow in the same interpreter."""
    env = {**os.environ, ENV_VARIABLE: "0"}
    listing = subprocess.run(
        [sys.executable, "-c", "import json, transformers; print(json.dumps(transformers._class_to_module))"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    groups: dict[str, list[str]] = {}
    for name, module in sorted(json.loads(listing.stdout).items()):
        parts = module.split(".")
        # `models.llama.modeling_llama` -> `models:modeling`: every model's modeling module imports the same core.
        group = f"models:{parts[-1].split('_')[0]}" if parts[0] == "models" else module
        groups.setdefault(group, []).append(f"from transformers import {name}")
    cases = []
    for statements in groups.values():
        cases.extend(statements[start : start + chunk_size] for start in range(0, len(statements), chunk_size))
    return cases + FAST_CASES


def run_cases(cases: list[list[str]], workers: int) -> list[CaseResult]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_case, cases))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every module of transformers' import structure")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    cases = all_cases() if args.all else FAST_CASES
    print(f"import-order matrix: {len(cases)} cases in fresh interpreters, {args.workers} at a time", flush=True)
    start = time.perf_counter()
    results = run_cases(cases, args.workers)
    failed = [result for result in results if result.problems]
    for result in failed:
        for problem in result.problems:
            print(f"FAIL {problem}")
    names = sum(len(result.statements) for result in results)
    print(
        f"{len(results) - len(failed)} of {len(results)} cases ({names} imports) pass in "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
