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
"""Writing an export: checks first, then the weights streamed shard by shard, then the config and the README.

Everything that can refuse runs before the output directory exists: the source config is read and translated into
the family's (refusing by layer and field), and every tensor name of the source, read from the safetensors headers
and mapped as upstream maps it when loading, must be one the model holds. Then each source shard is read, its
tensors renamed / split / padded by the family's transform, and written as one output shard before the next is
read, so the export holds one shard at a time, never the model. The written `config.json` is read back through the
family's loader and its per-layer values compared with the model's before the directory is moved into place
(`staging.staged_output_directory`: nothing is left at the destination on any error or interruption).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ...models.auto import AutoConfig
from ..conversion import (
    INDEX_FILE,
    ConversionError,
    canonical_config,
    checkpoint_tensors,
    files_beside_weights,
    list_weight_files,
    loading_rename,
    read_checkpoint_config,
    read_tensor_names,
    save_shard,
)
from ..staging import check_destination, staged_output_directory
from .engines import compatibility_table, engine_verdicts
from .gpt_oss_puzzle import plan_gpt_oss_puzzle
from .nemotron_h_puzzle import plan_nemotron_h_puzzle
from .nemotron_nas import plan_nemotron_nas
from .plan import ExportError, ExportPlan


__all__ = ["EXPORT_FORMATS", "export_checkpoint"]

EXPORT_FORMATS: dict[str, Callable[[Any], ExportPlan]] = {
    "nemotron-nas": plan_nemotron_nas,
    "gpt_oss_puzzle": plan_gpt_oss_puzzle,
    "nemotron_h_puzzle": plan_nemotron_h_puzzle,
}


def export_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    to: str,
    progress: Callable[[str], None] = print,
    drop_unused: bool = False,
) -> ExportPlan:
    """Writes the model in `source` to `destination` in the released format of the family `to`.

    Args:
        source: a checkpoint this package loads (safetensors): a model built here and saved with `save_pretrained`
            (stock model type plus `per_layer_config`), or a checkpoint of a heterogeneous family.
        destination: directory to create; it must not exist, and its parent must be a writable directory.
        to: the family, one of `EXPORT_FORMATS`.
        progress: called with one line per step, the engine verdicts and what the export changed (padding).
        drop_unused: leave out source tensors the model does not hold (fp8 KV scales, MTP layers); without it they
            make the export refuse, naming them.

    Returns:
        The plan that was written: its config, notes and the sub-block kinds the result holds.

    Raises:
        ExportError: what the format cannot express, by layer and field, or an unusable source; nothing is written.
        OutputDirectoryError: the destination cannot be written; nothing is left at it.
    """
    source, destination = Path(source), Path(destination)
    if to not in EXPORT_FORMATS:
        raise ExportError(f"Unknown export format {to!r}; choose one of {sorted(EXPORT_FORMATS)}.")
    check_destination(destination, what=f"{to} checkpoint")
    config = read_checkpoint_config(source, ExportError)
    canonical = canonical_config(config)
    plan = EXPORT_FORMATS[to](canonical)
    try:
        weight_files = list_weight_files(source)
        tensors = read_tensor_names(source, weight_files)
    except ConversionError as error:
        raise ExportError(str(error)) from error
    dropped = _check_tensors(source, canonical, tensors, drop_unused, progress)
    for note in plan.notes:
        progress(f"Note: {note}.")
    verdicts = engine_verdicts(to, plan.kinds)
    for line in verdicts:
        progress(line)

    shards = [name for name in weight_files if name != INDEX_FILE]
    with staged_output_directory(destination, what=f"{to} checkpoint") as staging:
        written = _write_shards(source, shards, tensors, dropped, plan, staging, progress)
        _finish_shards(staging, written)
        (staging / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
        carried = _carry_files(source, weight_files, staging)
        (staging / "README.md").write_text(_readme(source, config.model_type, plan, verdicts, carried))
        _check_config_reads_back(staging, plan)
    progress(f"Exported {source} ({config.model_type}) to {destination} ({to}).")
    return plan


def _check_tensors(
    source: Path, config: Any, tensors: dict[str, list[str]], drop_unused: bool, progress: Callable[[str], None]
) -> set[str]:
    """Every tensor of the model must be in the source, and every source tensor must be one of the model's (under
    the name upstream gives it when loading) or be left out with `drop_unused`. Returns the names left out."""
    expected = set(checkpoint_tensors(config)[1])
    rename = loading_rename(config)
    found, unused = set(), []
    for name in sorted(name for names in tensors.values() for name in names):
        loaded_as = rename(name)
        if loaded_as in expected:
            found.add(loaded_as)
        else:
            unused.append(name)
    missing = sorted(expected - found)
    if missing:
        raise ExportError(f"{source} does not match its config: {len(missing)} missing tensors, e.g. {missing[:3]}.")
    if unused and not drop_unused:
        raise ExportError(
            f"{source} holds {len(unused)} tensors that the model does not hold, e.g. {unused[:3]}; pass "
            "--drop-unused-tensors (`drop_unused=True`) to leave them out of the export. Nothing was written."
        )
    if unused:
        progress(f"Leaving out {len(unused)} tensors the model does not hold, e.g. {unused[:3]}.")
    return set(unused)


def _write_shards(
    source: Path,
    shards: list[str],
    tensors: dict[str, list[str]],
    dropped: set[str],
    plan: ExportPlan,
    staging: Path,
    progress: Callable[[str], None],
) -> list[tuple[str, list[str], int]]:
    """One output shard per source shard, each written before the next source shard is read."""
    written = []
    for number, shard in enumerate(shards, start=1):
        output = {}
        with safe_open(source / shard, framework="pt") as weights:
            for name in tensors[shard]:
                if name in dropped:
                    continue
                for out_name, tensor in plan.transform(name, weights.get_tensor(name)):
                    if out_name in output:
                        raise ExportError(f"Two source tensors become {out_name}; the source is inconsistent.")
                    output[out_name] = tensor.contiguous()
        if not output:
            continue
        partial = f"shard-{number:05d}.safetensors"
        save_shard(output, staging / partial, {"format": "pt"}, ExportError)
        size = (staging / partial).stat().st_size
        progress(f"[{number}/{len(shards)}] wrote {len(output)} tensors from {shard} ({size / 2**20:,.1f} MiB)")
        tensor_bytes = sum(tensor.numel() * tensor.element_size() for tensor in output.values())
        written.append((partial, sorted(output), tensor_bytes))
        del output
    return written


def _finish_shards(staging: Path, written: list[tuple[str, list[str], int]]) -> None:
    """The standard names: `model.safetensors`, or `model-0000i-of-0000n.safetensors` and their index."""
    if len(written) == 1:
        (staging / written[0][0]).rename(staging / "model.safetensors")
        return
    weight_map, total = {}, 0
    for number, (partial, names, size) in enumerate(written, start=1):
        final = f"model-{number:05d}-of-{len(written):05d}.safetensors"
        (staging / partial).rename(staging / final)
        weight_map.update(dict.fromkeys(names, final))
        total += size
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _carry_files(source: Path, weight_files: list[str], staging: Path) -> list[str]:
    """Tokenizer, generation config and the other files beside the weights (not remote code: engines that need the
    family's remote code take the release's, see the README)."""
    carried = files_beside_weights(source, weight_files, excluded=("README.md",))  # the export writes its own
    for name in carried:
        shutil.copy2(source / name, staging / name)
    return carried


def _check_config_reads_back(staging: Path, plan: ExportPlan) -> None:
    """The family's loader must read every layer back as the model has it (an `ffn_mult` that rounds to another
    width, a dropped field: caught here, before anything is at the destination)."""
    config = AutoConfig.from_pretrained(staging)
    for layer_idx, values in sorted(plan.expected_layers.items()):
        layer = config.per_layer_config[layer_idx]
        for name, value in values.items():
            found = sorted(layer.skip) if name == "skip" else getattr(layer, name)
            if found != value:
                raise ExportError(
                    f"The written {plan.family} config.json reads back layer {layer_idx}'s `{name}` as {found!r}, "
                    f"not {value!r}; nothing was written. This is a bug of the export: please report it."
                )


def _readme(source: Path, source_type: str, plan: ExportPlan, verdicts: list[str], carried: list[str]) -> str:
    changes = [f"- {note}." for note in plan.notes] or [
        "- None: every tensor is the source's, under the family's name."
    ]
    lines = [
        f"# A {plan.family} checkpoint exported by transformers-heterogeneity",
        "",
        f"Exported from `{source.name}` ({source_type}) with "
        f"`transformers-heterogeneity convert SRC DST --to {plan.family}`, in the format of the family's releases.",
        "",
        "## What the export changed",
        "",
        *changes,
        "",
        "## Which engines run it",
        "",
        *(f"- {line}" for line in verdicts),
        "",
        "vLLM, SGLang and TensorRT-LLM read `block_configs` through the family's remote configuration code "
        "(`auto_map`, written as released): put the release's configuration files beside `config.json` and pass "
        "`--trust-remote-code`. Transformers with transformers-heterogeneity installed loads it with "
        "`AutoModelForCausalLM.from_pretrained(path)`, without remote code; llama.cpp's `convert_hf_to_gguf.py` reads "
        "`config.json` itself.",
        "",
        f"## The {plan.family} format in each engine",
        "",
        compatibility_table(plan.family),
    ]
    if carried:
        lines += ["## Files carried over from the source", "", *(f"- `{name}`" for name in carried), ""]
    return "\n".join(lines)
