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
"""Which serving engine runs which sub-block kind of each exported family, from the engines' own source.

Each entry was read in the engine's source (repository and file in `SOURCES`); only llama.cpp's was also run here
(`make llama-cpp-check`, which compares its logits with this package's on an exported child). An export prints the
rows for the kinds its result holds, and writes the full table of its family into the output's README.md, so that a
user learns before deploying which engine runs the checkpoint as written.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["ENGINES", "SUB_BLOCK_KINDS", "Support", "compatibility_table", "engine_verdicts"]


@dataclass(frozen=True)
class Support:
    """How an engine handles one sub-block kind: `status` is "runs", "fails" (refuses or crashes at load), "wrong"
    (loads and computes something else), or "absent" (the engine has no reader for the family)."""

    status: str
    note: str = ""


ENGINES = ("vLLM", "SGLang", "TensorRT-LLM", "llama.cpp")

SUB_BLOCK_KINDS = {
    "nemotron-nas": {
        "attention": "attention (`n_heads_in_group`)",
        "per_layer_kv_heads": "KV-head count differing between layers",
        "attention_no_op": "no-op attention",
        "attention_linear": "linear attention (`replace_with_linear`)",
        "ffn": "FFN (`ffn_mult`)",
        "ffn_no_op": "no-op FFN in a layer whose attention is no-op too",
        "ffn_no_op_after_attention": "no-op FFN in a layer with attention",
        "last_layer_ffn_no_op": "no-op FFN in the last layer",
        "ffn_linear": "linear FFN (`replace_with_linear`)",
    },
    "gpt_oss_puzzle": {
        "moe": "MoE FFN",
        "per_layer_experts": "expert count differing between layers",
        "full_attention": "full attention",
        "sliding_attention": "sliding-window attention",
        "per_layer_windows": "window size differing between layers",
    },
    "nemotron_h_puzzle": {
        "mamba": "Mamba2 block",
        "attention": "attention block",
        "moe": "MoE block",
        "mlp": "MLP block",
        "per_block_moe": "MoE values (experts, top-k, widths, latent size) differing between blocks",
        "per_block_mamba": "`ssm_state_size` differing between blocks",
        "per_block_mlp": "MLP width differing between blocks",
    },
}

SOURCES = {
    ("nemotron-nas", "vLLM"): "vllm-project/vllm `vllm/model_executor/models/nemotron_nas.py`",
    ("nemotron-nas", "SGLang"): "sgl-project/sglang `python/sglang/srt/models/nemotron_nas.py`, "
    "`python/sglang/srt/configs/model_config.py`",
    ("nemotron-nas", "TensorRT-LLM"): "NVIDIA/TensorRT-LLM `tensorrt_llm/_torch/models/modeling_nemotron_nas.py`",
    ("nemotron-nas", "llama.cpp"): "llama.cpp as vendored by llama-cpp-python 0.3.36: `conversion/deci.py`, "
    "`src/models/deci.cpp`; run here by `make llama-cpp-check`",
    ("gpt_oss_puzzle", "vLLM"): "vllm-project/vllm `vllm/model_executor/models/gpt_oss_puzzle.py`",
    ("gpt_oss_puzzle", "SGLang"): "sgl-project/sglang: no `GptOssPuzzleForCausalLM` found in its models",
    ("gpt_oss_puzzle", "TensorRT-LLM"): "NVIDIA/TensorRT-LLM: no `GptOssPuzzleForCausalLM` found in "
    "`tensorrt_llm/_torch/models/`",
    ("gpt_oss_puzzle", "llama.cpp"): "llama.cpp as vendored by llama-cpp-python 0.3.36: no converter registered for "
    "`GptOssPuzzleForCausalLM` in `conversion/__init__.py`",
    ("nemotron_h_puzzle", "vLLM"): "vllm-project/vllm: `NemotronHPuzzleForCausalLM` maps to its NemotronH model; "
    "per-block reading not verified here",
    ("nemotron_h_puzzle", "SGLang"): "sgl-project/sglang `python/sglang/srt/configs/nemotron_h.py` reads "
    "`block_configs`; not verified block by block here",
    ("nemotron_h_puzzle", "TensorRT-LLM"): "NVIDIA/TensorRT-LLM PR #12731 "
    "(`tests/unittest/_torch/models/test_nemotron_h_puzzle.py`); not verified block by block here",
    ("nemotron_h_puzzle", "llama.cpp"): "llama.cpp as vendored by llama-cpp-python 0.3.36: `conversion/nemotron.py` "
    "(`NemotronHPuzzleModel`)",
}

_RUNS = Support("runs")
_VLLM_SGLANG_LINEAR = "builds attention from `num_attention_heads // n_heads_in_group` (null for a linear one)"
_NAS_FFN_LINEAR = "builds a gated MLP from `ffn_mult` (null for a linear one) and has no `linear_mlp` weight"
_DECI_SKIP = (
    "`deci.cpp`: `if (n_ff == 0) continue;` skips the rest of the layer, so its attention output and residual add "
    "are dropped (the layer returns its input)"
)

_NAS = {
    "attention": _RUNS,
    "attention_no_op": _RUNS,
    "ffn": _RUNS,
    "ffn_no_op": _RUNS,
    "ffn_no_op_after_attention": _RUNS,
    "last_layer_ffn_no_op": _RUNS,
    "per_layer_kv_heads": _RUNS,
    "attention_linear": _RUNS,
    "ffn_linear": _RUNS,
}
SUPPORT: dict[tuple[str, str], dict[str, Support]] = {
    ("nemotron-nas", "vLLM"): {
        **_NAS,
        "attention_linear": Support("fails", _VLLM_SGLANG_LINEAR),
        "ffn_linear": Support("fails", _NAS_FFN_LINEAR),
    },
    ("nemotron-nas", "SGLang"): {
        **_NAS,
        "per_layer_kv_heads": Support(
            "fails", "`get_total_num_kv_heads` raises 'Variable GQA (VGQA) is not yet supported for nemotron-nas'"
        ),
        "attention_linear": Support("fails", _VLLM_SGLANG_LINEAR),
        "ffn_linear": Support("fails", _NAS_FFN_LINEAR),
    },
    ("nemotron-nas", "TensorRT-LLM"): dict(_NAS),
    ("nemotron-nas", "llama.cpp"): {
        **_NAS,
        "ffn_no_op_after_attention": Support("wrong", _DECI_SKIP),
        "last_layer_ffn_no_op": Support(
            "fails", "`deci.cpp` never selects the output rows of the last layer then, and the decode aborts"
        ),
        "ffn_linear": Support("fails", "the converter has no tensor mapping for `mlp.linear_mlp` and stops"),
    },
    ("gpt_oss_puzzle", "vLLM"): dict.fromkeys(SUB_BLOCK_KINDS["gpt_oss_puzzle"], _RUNS),
    ("nemotron_h_puzzle", "SGLang"): dict.fromkeys(SUB_BLOCK_KINDS["nemotron_h_puzzle"], Support("runs", "not run")),
    ("nemotron_h_puzzle", "vLLM"): dict.fromkeys(SUB_BLOCK_KINDS["nemotron_h_puzzle"], Support("runs", "not run")),
    ("nemotron_h_puzzle", "TensorRT-LLM"): dict.fromkeys(
        SUB_BLOCK_KINDS["nemotron_h_puzzle"], Support("runs", "not run")
    ),
    ("nemotron_h_puzzle", "llama.cpp"): {
        **dict.fromkeys(SUB_BLOCK_KINDS["nemotron_h_puzzle"], _RUNS),
        "per_block_moe": Support(
            "fails",
            "only `num_experts_per_tok` and `moe_intermediate_size` are read per block; the expert count, shared "
            "width, latent size and scaling are read as global values, which the format deletes",
        ),
    },
}
for _family, _kinds in SUB_BLOCK_KINDS.items():
    for _engine in ENGINES:
        SUPPORT.setdefault((_family, _engine), dict.fromkeys(_kinds, Support("absent", "no reader for the family")))


def engine_verdicts(family: str, kinds: set[str]) -> list[str]:
    """One line per engine: whether it runs a checkpoint holding `kinds` as written, and if not, why."""
    lines = []
    for engine in ENGINES:
        support = SUPPORT[(family, engine)]
        problems = [(kind, support[kind]) for kind in SUB_BLOCK_KINDS[family] if kind in kinds]
        problems = [(kind, entry) for kind, entry in problems if entry.status != "runs"]
        if not problems:
            lines.append(f"{engine}: runs it as written ({SOURCES[(family, engine)]}).")
            continue
        reasons = "; ".join(
            f"{SUB_BLOCK_KINDS[family][kind]}: {entry.status}, {entry.note}" for kind, entry in problems
        )
        lines.append(f"{engine}: does not run it as written. {reasons} ({SOURCES[(family, engine)]}).")
    return lines


def compatibility_table(family: str) -> str:
    """The family's sub-block kinds x engines, as a Markdown table, then each engine's source."""
    header = ["sub-block kind", *ENGINES]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, description in SUB_BLOCK_KINDS[family].items():
        cells = []
        for engine in ENGINES:
            entry = SUPPORT[(family, engine)][kind]
            cells.append(entry.status + (f" ({entry.note})" if entry.note and entry.status != "absent" else ""))
        rows.append(f"| {description} | " + " | ".join(cells) + " |")
    sources = [f"- {engine}: {SOURCES[(family, engine)]}" for engine in ENGINES]
    return "\n".join(rows) + "\n\nSources:\n\n" + "\n".join(sources) + "\n"
