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
"""Rewriting a Nemotron-NAS / DeciLM checkpoint into the canonical form: `model_type: llama` plus `per_layer_config`.

The tensors of those checkpoints already have stock Llama names (`self_attn.linear_attn` / `mlp.linear_mlp` are the
canonical names of linear sub-blocks), so converting rewrites `config.json` only. The weight files are hard-linked
(or copied) as they are: nothing is loaded into memory, and a 250B checkpoint converts in seconds. Everything is
checked first (config readable and of a supported family, weight files present, tensor names exactly those of the
canonical model, read from the safetensors headers), and the output is written to a temporary directory beside the
destination that is renamed at the end, so a failure leaves no partial output.

A gpt-oss-puzzle checkpoint converts to `model_type: gpt_oss` the same way; one that holds fp8 KV-cache scales is
refused (stock GPT-OSS has no such tensors, and converting rewrites no weight file).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from ..configuration_utils import PreTrainedConfig
from ..models.auto import AutoConfig, AutoModelForCausalLM
from ..models.auto.configuration_auto import CONFIG_MAPPING
from .models import CHECKPOINT_FORMATS
from .models.format_utils import CheckpointFormatConfigMixin


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
) -> PreTrainedConfig:
    """Writes the canonical form of the checkpoint in `source` to `destination` and returns its config.

    Args:
        source: directory of a `nemotron-nas` or `deci` checkpoint (safetensors, sharded or single file).
        destination: directory to create; it must not exist.
        link: hard-link the weight files (falls back to copying across file systems); `False` copies them.
        progress: called with one line per step.

    Raises:
        ConversionError: naming what is wrong; nothing is left at `destination`.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; give a directory that does not exist yet.")
    config = _read_config(source)
    weight_files = _weight_files(source)
    canonical_dict = config.to_canonical_dict()
    canonical = CONFIG_MAPPING[canonical_dict["model_type"]].from_dict(canonical_dict)
    _check_tensor_names(source, weight_files, canonical)
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
        for number, name in enumerate(weight_files + other_files, start=1):
            how = _transfer(source / name, staging / name, link and name in weight_files)
            size = (source / name).stat().st_size
            progress(f"[{number}/{len(weight_files) + len(other_files)}] {how} {name} ({size / 2**20:,.1f} MiB)")
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"Converted {source} ({config.model_type}) to {destination} ({canonical.model_type} + per_layer_config).")
    return canonical


def _read_config(source: Path) -> CheckpointFormatConfigMixin:
    if not (source / "config.json").is_file():
        raise ConversionError(f"{source} is not a checkpoint directory: it has no config.json.")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise ConversionError(f"Cannot read {source / 'config.json'}: {error}") from error
    if not isinstance(config, CheckpointFormatConfigMixin):
        raise ConversionError(
            f"{source} holds a '{config.model_type}' checkpoint; convert rewrites {sorted(CHECKPOINT_FORMATS)} "
            "checkpoints into the canonical form."
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


def _check_tensor_names(source: Path, weight_files: list[str], config: PreTrainedConfig) -> None:
    """The checkpoint's tensors must be exactly those of the canonical model (built on the meta device)."""
    found = set()
    for name in weight_files:
        if name == INDEX_FILE:
            continue
        try:
            with safe_open(source / name, framework="pt") as weights:
                found.update(weights.keys())
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise ConversionError(f"Cannot read the safetensors header of {source / name}: {error}") from error
    with torch.device("meta"):
        expected = set(AutoModelForCausalLM.from_config(config).state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    for what, names in (("missing", expected - found), ("unexpected", found - expected)):
        if names:
            raise ConversionError(
                f"{source} does not match its config: {len(names)} {what} tensors, e.g. {sorted(names)[:3]}."
            )


def _transfer(source: Path, destination: Path, link: bool) -> str:
    if link:
        try:
            os.link(source, destination)
            return "linked"
        except OSError:  # another file system, or links not supported
            pass
    shutil.copy2(source, destination)
    return "copied"
