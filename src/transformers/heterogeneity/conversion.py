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
"""Rewriting a heterogeneous checkpoint into the canonical form: the stock model type plus `per_layer_config`.

Nemotron-NAS / DeciLM become `model_type: llama`, gpt-oss-puzzle `gpt_oss`, Nemotron-H Puzzle `nemotron_h`. Their tensors
already have the stock architecture's names, up to the renames that upstream applies when it loads that architecture
(NemotronH: `backbone.` -> `model.`, one tensor per expert merged into one stack), so converting rewrites `config.json`
and links (or copies) the weight files as they are: nothing is loaded into memory, and a 250B checkpoint converts in
seconds. Everything is checked first (config readable and of a supported family, weight files present, every tensor
name, read from the safetensors headers and mapped as upstream maps it when loading, is one the canonical model holds),
and the output is written to a temporary directory beside the destination that is renamed at the end, so a failure
leaves no partial output.

Tensors the family reads and does not use (`checkpoint_formats/loading_utils.py`: fp8 KV-cache scales, Nemotron-H Puzzle's MTP
layers) are the one thing a stock model may not accept. Those the stock model ignores on its own (upstream NemotronH
drops `mtp.*`) stay in the files, and are reported. The others (fp8 KV scales: unexpected in stock GPT-OSS and Llama)
make the conversion refuse, naming them, unless `drop_unused=True`: the shards holding them are then rewritten without
them, one shard at a time, and the index updated; every other shard is still linked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..configuration_utils import PreTrainedConfig
from ..conversion_mapping import get_checkpoint_conversion_mapping
from ..core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from ..models.auto import AutoConfig, AutoModelForCausalLM
from ..models.auto.configuration_auto import CONFIG_MAPPING
from .checkpoint_formats import CHECKPOINT_FORMATS
from .checkpoint_formats.anymodel import anymodel_canonical_dict, anymodel_model_types, is_anymodel_config
from .checkpoint_formats.format_utils import CheckpointFormatConfigMixin
from .inspection import unquantized


__all__ = ["ConversionError", "convert_checkpoint"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class ConversionError(ValueError):
    """The source cannot be converted (unreadable, unsupported, inconsistent) or the destination is taken."""


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    link: bool = True,
    progress: Callable[[str], None] = print,
    drop_unused: bool = False,
) -> PreTrainedConfig:
    """Writes the canonical form of the checkpoint in `source` to `destination` and returns its config.

    Args:
        source: directory of a checkpoint of one of `CHECKPOINT_FORMATS` (safetensors, sharded or single file).
        destination: directory to create; it must not exist.
        link: hard-link the weight files (falls back to copying across file systems); `False` copies them.
        progress: called with one line per step.
        drop_unused: leave out the tensors the family does not use and the stock model would not accept (fp8 KV
            scales); the shards holding them are rewritten. Without it such tensors make the conversion refuse.

    Raises:
        ConversionError: naming what is wrong; nothing is left at `destination`.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; give a directory that does not exist yet.")
    config = _read_config(source)
    weight_files = _weight_files(source)
    canonical_dict = anymodel_canonical_dict(config) if is_anymodel_config(config) else config.to_canonical_dict()
    canonical = CONFIG_MAPPING[canonical_dict["model_type"]].from_dict(canonical_dict)
    tensors = _tensor_names(source, weight_files)
    dropped = _check_tensor_names(source, config, canonical, tensors, drop_unused, progress)
    rewritten = {name for name, names in tensors.items() if dropped & set(names)}
    other_files = sorted(
        path.name
        for path in source.iterdir()
        # Remote code is what the canonical form replaces.
        if path.is_file() and path.name not in {"config.json", *weight_files} and path.suffix != ".py"
    )

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        canonical.save_pretrained(staging)
        progress(
            f"Wrote config.json: model_type {canonical.model_type} with per_layer_config "
            f"({canonical.num_hidden_layers} layers)."
        )
        files = weight_files + other_files
        for number, name in enumerate(files, start=1):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)  # AnyModel: under subblocks_safetensors/
            if name in rewritten:
                how = _rewrite_without(source / name, staging / name, dropped)
            elif name == INDEX_FILE and dropped:
                how = _rewrite_index(source / name, staging / name, dropped)
            else:
                how = _transfer(source / name, staging / name, link and name in weight_files)
            size = (staging / name).stat().st_size
            progress(f"[{number}/{len(files)}] {how} {name} ({size / 2**20:,.1f} MiB)")
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"Converted {source} ({config.model_type}) to {destination} ({canonical.model_type} + per_layer_config).")
    return canonical


def _read_config(source: Path) -> PreTrainedConfig:
    if not (source / "config.json").is_file():
        raise ConversionError(f"{source} is not a checkpoint directory: it has no config.json.")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise ConversionError(f"Cannot read {source / 'config.json'}: {error}") from error
    if not isinstance(config, CheckpointFormatConfigMixin) and not is_anymodel_config(config):
        raise ConversionError(
            f"{source} holds a '{config.model_type}' checkpoint; convert rewrites {sorted(CHECKPOINT_FORMATS)} "
            f"checkpoints and AnyModel outputs ({anymodel_model_types()} with `block_configs`) into the "
            "canonical form."
        )
    return config


def _weight_files(source: Path) -> list[str]:
    if (source / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((source / INDEX_FILE).read_text())["weight_map"]
        except (ValueError, KeyError) as error:
            raise ConversionError(f"Cannot read {source / INDEX_FILE}: {error!r}") from error
        files = sorted(set(weight_map.values()))
        missing = [name for name in files if not (source / name).is_file()]
        if missing:
            raise ConversionError(f"{source / INDEX_FILE} lists {missing[0]}, which is missing.")
        return [INDEX_FILE, *files]
    if (source / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    raise ConversionError(f"{source} has no {INDEX_FILE} and no {SINGLE_FILE}; only safetensors checkpoints convert.")


def _tensor_names(source: Path, weight_files: list[str]) -> dict[str, list[str]]:
    """Weight file -> the tensor names in its safetensors header."""
    tensors = {}
    for name in weight_files:
        if name == INDEX_FILE:
            continue
        try:
            with safe_open(source / name, framework="pt") as weights:
                tensors[name] = list(weights.keys())
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise ConversionError(f"Cannot read the safetensors header of {source / name}: {error}") from error
    return tensors


def _check_tensor_names(
    source: Path,
    config: PreTrainedConfig,
    canonical: PreTrainedConfig,
    tensors: dict[str, list[str]],
    drop_unused: bool,
    progress: Callable[[str], None],
) -> set[str]:
    """Every tensor, under the name upstream gives it when loading the canonical model, must be one that model holds,
    and every tensor of the model must be there. Returns the tensors to leave out."""
    # Built unquantized; the quantized tensor names are mapped back to its parameters below (`_loading_rename`).
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(unquantized(canonical))
    expected = set(model.state_dict())
    if canonical.tie_word_embeddings:
        expected.discard("lm_head.weight")
    stock_ignores = [re.compile(pattern) for pattern in model._keys_to_ignore_on_load_unexpected or ()]
    unused_kinds = _family_model_class(config)._unused_tensors if config.model_type in CHECKPOINT_FORMATS else ()
    rename = _loading_rename(canonical)
    found, unexpected, kept, dropped, refused = set(), [], [], set(), []
    for name in sorted(name for names in tensors.values() for name in names):
        unused = any(re.search(kind.pattern, name) for kind in unused_kinds)
        if unused and drop_unused:
            dropped.add(name)
        elif any(regex.search(name) for regex in stock_ignores):
            kept.append(name)  # the stock model skips it when loading, as it does for any checkpoint
        elif unused:
            refused.append(name)
        elif (loaded_as := rename(name)) in expected:
            found.add(loaded_as)
        else:
            unexpected.append(name)
    for what, names in (("missing", sorted(expected - found)), ("unexpected", unexpected)):
        if names:
            raise ConversionError(
                f"{source} does not match its config: {len(names)} {what} tensors, e.g. {names[:3]}."
            )
    if refused:
        raise ConversionError(
            f"{source} holds {len(refused)} tensors that {config.model_type} models read and do not use and that a "
            f"stock {canonical.model_type} model would report as unexpected, e.g. {refused[:3]}; pass "
            "--drop-unused-tensors (`drop_unused=True`) to leave them out (the shards holding them are rewritten)."
        )
    if kept:
        progress(f"Kept {len(kept)} tensors that {canonical.model_type} skips when loading, e.g. {kept[:3]}.")
    if dropped:
        progress(f"Leaving out {len(dropped)} unused tensors, e.g. {sorted(dropped)[:3]}.")
    return dropped


def _family_model_class(config: PreTrainedConfig) -> type:
    checkpoint_format = CHECKPOINT_FORMATS[config.model_type]
    return checkpoint_format.model_class(checkpoint_format.models["AutoModelForCausalLM"])


def _loading_rename(config: PreTrainedConfig) -> Callable[[str], str]:
    """The name a checkpoint tensor gets when upstream loads it into a model of `config`: the model type's checkpoint
    conversion mapping (`conversion_mapping.py`: renames, then at most one converter, as `rename_source_key` applies
    them), and for MXFP4 experts `{name}_blocks` / `{name}_scales` -> `{name}` (upstream's MXFP4 integration loads both
    into that parameter)."""
    transforms = get_checkpoint_conversion_mapping(config.model_type) or []
    renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in transforms if isinstance(transform, WeightConverter)]
    quantization = getattr(config, "quantization_config", None) or {}
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    mxfp4 = quantization.get("quant_method") == "mxfp4"

    def rename(name: str) -> str:
        if mxfp4:
            name = re.sub(r"_(blocks|scales)$", "", name)
        return rename_source_key(name, renamings, converters)[0]

    return rename


def _rewrite_without(source: Path, destination: Path, dropped: set[str]) -> str:
    """Writes the shard without the dropped tensors (the one shard in memory at a time)."""
    with safe_open(source, framework="pt") as weights:
        metadata = weights.metadata()
        names = weights.keys()  # a safetensors handle is not iterable
        kept = {name: weights.get_tensor(name) for name in names if name not in dropped}
    save_file(kept, destination, metadata=metadata)
    return "rewrote"


def _rewrite_index(source: Path, destination: Path, dropped: set[str]) -> str:
    index = json.loads(source.read_text())
    index["weight_map"] = {name: shard for name, shard in index["weight_map"].items() if name not in dropped}
    destination.write_text(json.dumps(index, indent=2))
    return "rewrote"


def _transfer(source: Path, destination: Path, link: bool) -> str:
    if link:
        try:
            os.link(source, destination)
            return "linked"
        except OSError:  # another file system, or links not supported
            pass
    shutil.copy2(source, destination)
    return "copied"
