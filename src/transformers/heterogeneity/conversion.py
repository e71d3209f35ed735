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
and the output is written through `staging.staged_output_directory` (a directory beside the destination, renamed at
the end), so a failure or an interruption leaves no partial output.

Tensors the family reads and does not use (`checkpoint_formats/loading_utils.py`: fp8 KV-cache scales, Nemotron-H Puzzle's MTP
layers) are the one thing a stock model may not accept. Those the stock model ignores on its own (upstream NemotronH
drops `mtp.*`) stay in the files, and are reported. The others (fp8 KV scales: unexpected in stock GPT-OSS and Llama)
make the conversion refuse, naming them, unless `drop_unused=True`: the shards holding them are then rewritten without
them, one shard at a time, and the index updated; every other shard is still linked.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..configuration_utils import PreTrainedConfig
from ..conversion_mapping import get_checkpoint_conversion_mapping
from ..core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from ..models.auto import AutoConfig, AutoModelForCausalLM
from ..models.auto.configuration_auto import CONFIG_MAPPING
from .checkpoint_formats import CHECKPOINT_FORMATS
from .checkpoint_formats.anymodel import anymodel_canonical_dict, anymodel_model_types, is_anymodel_config
from .checkpoint_formats.format_utils import CheckpointFormatConfigMixin
from .inspection import unquantized
from .staging import check_destination, staged_output_directory


__all__ = [
    "ConversionError",
    "canonical_config",
    "checkpoint_tensors",
    "convert_checkpoint",
    "files_beside_weights",
    "list_weight_files",
    "loading_rename",
    "read_checkpoint_config",
    "read_tensor_names",
    "save_shard",
]

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
        destination: directory to create; it must not exist, and its parent must be a writable directory.
        link: hard-link the weight files (falls back to copying across file systems); `False` copies them.
        progress: called with one line per step.
        drop_unused: leave out the tensors the family does not use and the stock model would not accept (fp8 KV
            scales); the shards holding them are rewritten. Without it such tensors make the conversion refuse.

    Raises:
        ConversionError: naming what is wrong with the source; nothing is left at `destination`.
        OutputDirectoryError: the destination cannot be written (exists, parent missing or read-only, disk full);
            nothing is left at it.
    """
    source, destination = Path(source), Path(destination)
    check_destination(destination, what="converted checkpoint")  # before reading the source: fail fast
    config = _read_config(source)
    weight_files = list_weight_files(source)
    canonical = canonical_config(config)
    tensors = _tensor_headers(source, weight_files)
    _check_index(source, weight_files, tensors)
    dropped = _check_tensors(source, config, canonical, tensors, drop_unused, progress)
    rewritten = {name for name, names in tensors.items() if dropped & set(names)}
    other_files = files_beside_weights(source, weight_files)

    with staged_output_directory(destination, what="converted checkpoint") as staging:
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
    progress(f"Converted {source} ({config.model_type}) to {destination} ({canonical.model_type} + per_layer_config).")
    return canonical


def read_checkpoint_config(source: Path, error_cls: type[Exception] = ConversionError) -> PreTrainedConfig:
    """`AutoConfig.from_pretrained(source)`, every reason it cannot be read raised as one `error_cls` line."""
    if not (source / "config.json").is_file():
        raise error_cls(f"{source} is not a checkpoint directory: it has no config.json.")
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError, TypeError, StrictDataclassError) as error:  # upstream's `@strict` fields: the last
        raise error_cls(f"Cannot read {source / 'config.json'}: {' '.join(str(error).split())}") from error


def _read_config(source: Path) -> PreTrainedConfig:
    config = read_checkpoint_config(source)
    if not isinstance(config, CheckpointFormatConfigMixin) and not is_anymodel_config(config):
        raise ConversionError(
            f"{source} holds a '{config.model_type}' checkpoint; convert rewrites {sorted(CHECKPOINT_FORMATS)} "
            f"checkpoints and AnyModel outputs ({anymodel_model_types()} with `block_configs`) into the "
            "canonical form."
        )
    return config


def canonical_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """The same model in the canonical form (stock model type plus `per_layer_config`); a canonical config as it is."""
    if is_anymodel_config(config):
        canonical_dict = anymodel_canonical_dict(config)
    elif isinstance(config, CheckpointFormatConfigMixin):
        canonical_dict = config.to_canonical_dict()
    else:
        return config
    return CONFIG_MAPPING[canonical_dict["model_type"]].from_dict(canonical_dict)


def list_weight_files(source: Path) -> list[str]:
    if (source / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((source / INDEX_FILE).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise ConversionError(f"Cannot read {source / INDEX_FILE}: {error!r}") from error
        if not isinstance(weight_map, dict) or not all(
            isinstance(name, str) and isinstance(file, str) for name, file in weight_map.items()
        ):
            raise ConversionError(
                f"{source / INDEX_FILE}: `weight_map` must map tensor names to file names, got {weight_map!r:.200}."
            )
        files = sorted(set(weight_map.values()))
        missing = [name for name in files if not (source / name).is_file()]
        if missing:
            raise ConversionError(f"{source / INDEX_FILE} lists {missing[0]}, which is missing.")
        return [INDEX_FILE, *files]
    if (source / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    raise ConversionError(f"{source} has no {INDEX_FILE} and no {SINGLE_FILE}; only safetensors checkpoints convert.")


@dataclass(frozen=True)
class TensorHeader:
    """A tensor as its safetensors header describes it (dtype as safetensors spells it: `BF16`, `U8`, ...)."""

    dtype: str
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.dtype} {list(self.shape)}"


# safetensors dtype names a floating-point parameter loads from as the number it is (upstream casts to the model's
# dtype). fp8 tensors need the scales of their quantization config, and integers are no weights: both would load
# silently as other numbers.
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
# MXFP4: 32 values per block, two per byte (OCP Microscaling Formats spec v1.0, MXFP4; upstream `integrations/mxfp4.py`
# `_convert_moe_packed_tensors`: blocks `[experts, rows, groups, 16]` and scales `[experts, rows, groups]`, both uint8,
# dequantize to `[experts, groups * 32, rows]`).
MXFP4_BLOCK_BYTES = 16


def files_beside_weights(source: Path, weight_files: list[str], excluded: tuple[str, ...] = ()) -> list[str]:
    """The files of a checkpoint directory besides its config, its weights and `excluded`, sorted: tokenizer,
    generation config and the like. Never remote code (`*.py`): the canonical form, and the engines that read a
    family's format, replace it."""
    return sorted(
        path.name
        for path in source.iterdir()
        if path.is_file() and path.name not in {"config.json", *weight_files, *excluded} and path.suffix != ".py"
    )


def _tensor_headers(source: Path, weight_files: list[str]) -> dict[str, dict[str, TensorHeader]]:
    """Weight file -> the tensors in its safetensors header (nothing is loaded)."""
    tensors = {}
    for name in weight_files:
        if name == INDEX_FILE:
            continue
        try:
            with safe_open(source / name, framework="pt") as weights:
                names = weights.keys()  # a safetensors handle is not iterable
                slices = {key: weights.get_slice(key) for key in names}
                tensors[name] = {key: TensorHeader(s.get_dtype(), tuple(s.get_shape())) for key, s in slices.items()}
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise ConversionError(f"Cannot read the safetensors header of {source / name}: {error}") from error
    return tensors


def read_tensor_names(source: Path, weight_files: list[str]) -> dict[str, list[str]]:
    """Weight file -> the tensor names in its safetensors header."""
    return {name: list(tensors) for name, tensors in _tensor_headers(source, weight_files).items()}


def _check_index(source: Path, weight_files: list[str], tensors: dict[str, dict[str, TensorHeader]]) -> None:
    """The index lists every tensor of every shard, each in the shard that holds it: upstream loads by the index, so a
    tensor it does not list is never loaded and one it lists elsewhere fails the load."""
    if weight_files[0] != INDEX_FILE:
        return
    weight_map = json.loads((source / INDEX_FILE).read_text())["weight_map"]
    held_by = {name: shard for shard, names in tensors.items() for name in names}
    for name, shard in sorted(weight_map.items()):
        if held_by.get(name) != shard:
            where = f"it is in {held_by[name]}" if name in held_by else "no shard holds it"
            raise ConversionError(f"{source / INDEX_FILE} lists `{name}` in {shard}, but {where}.")
    for name, shard in sorted(held_by.items()):
        if name not in weight_map:
            raise ConversionError(f"{source / INDEX_FILE} does not list `{name}`, which {shard} holds.")


def checkpoint_tensors(config: PreTrainedConfig) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model of `config` on the meta device and the tensors a checkpoint of it holds (a tied `lm_head.weight` is
    not one). Built unquantized: the quantized tensor names map back to its parameters through `loading_rename`."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(unquantized(config))
    expected = model.state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    return model, expected


def _check_tensors(
    source: Path,
    config: PreTrainedConfig,
    canonical: PreTrainedConfig,
    tensors: dict[str, dict[str, TensorHeader]],
    drop_unused: bool,
    progress: Callable[[str], None],
) -> set[str]:
    """Every tensor, under the name upstream gives it when loading the canonical model, must be one that model holds,
    with the shape and kind of number the model's parameter has, and every tensor of the model must be there. Returns
    the tensors to leave out."""
    model, expected = checkpoint_tensors(canonical)
    stock_ignores = [re.compile(pattern) for pattern in model._keys_to_ignore_on_load_unexpected or ()]
    unused_kinds = _family_model_class(config)._unused_tensors if config.model_type in CHECKPOINT_FORMATS else ()
    rename = loading_rename(canonical)
    headers = {name: header for file_tensors in tensors.values() for name, header in file_tensors.items()}
    loaded: dict[str, list[str]] = defaultdict(list)  # parameter -> the checkpoint tensors it loads from
    unexpected, kept, dropped, refused = [], [], set(), []
    for name in sorted(headers):
        unused = any(re.search(kind.pattern, name) for kind in unused_kinds)
        if unused and drop_unused:
            dropped.add(name)
        elif any(regex.search(name) for regex in stock_ignores):
            kept.append(name)  # the stock model skips it when loading, as it does for any checkpoint
        elif unused:
            refused.append(name)
        elif (loaded_as := rename(name)) in expected:
            loaded[loaded_as].append(name)
        else:
            unexpected.append(name)
    for what, names in (("missing", sorted(expected.keys() - loaded.keys())), ("unexpected", unexpected)):
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
    mismatches = [
        mismatch
        for parameter, names in sorted(loaded.items())
        for mismatch in _mismatches(canonical, parameter, expected[parameter], names, headers)
    ]
    if mismatches:
        raise ConversionError(
            f"{source} does not match its config: {len(mismatches)} tensors differ from the {canonical.model_type} "
            f"model the config describes, e.g. {'; '.join(mismatches[:3])}."
        )
    if kept:
        progress(f"Kept {len(kept)} tensors that {canonical.model_type} skips when loading, e.g. {kept[:3]}.")
    if dropped:
        progress(f"Leaving out {len(dropped)} unused tensors, e.g. {sorted(dropped)[:3]}.")
    return dropped


def _mismatches(
    config: PreTrainedConfig, parameter: str, tensor: torch.Tensor, names: list[str], headers: dict[str, TensorHeader]
) -> list[str]:
    """`name: expected ..., found ...` for each checkpoint tensor of `parameter` that would not load into it as the
    number it is: another shape, or another kind of number."""
    shape = tuple(tensor.shape)
    if _is_mxfp4(config) and names[0].endswith(("_blocks", "_scales")):
        wanted = _mxfp4_headers(parameter, shape)
        return [
            f"`{name}`: expected {wanted.get(name, f'no MXFP4 tensor for {parameter} {list(shape)}')}, found "
            f"{headers[name]}"
            for name in names
            if headers[name] != wanted.get(name)
        ]
    kind = "/".join(FLOAT_DTYPES) if tensor.is_floating_point() else "an integer dtype"
    wrong_kind = [name for name in names if (headers[name].dtype in FLOAT_DTYPES) != tensor.is_floating_point()]
    if len(names) == 1:
        if wrong_kind or headers[names[0]].shape != shape:
            return [f"`{names[0]}`: expected {kind} {list(shape)}, found {headers[names[0]]}"]
        return []
    mismatches = [f"`{name}`: expected {kind}, found {headers[name]}" for name in wrong_kind]
    combined = _combined_shape(config, parameter, names, headers)
    if combined != shape:
        mismatches.append(
            f"`{parameter}` (loaded from {len(names)} tensors such as `{names[0]}` {headers[names[0]]}): expected "
            f"{list(shape)}, found {list(combined) if combined else 'tensors that do not combine'}"
        )
    return mismatches


def _mxfp4_headers(parameter: str, shape: tuple[int, ...]) -> dict[str, TensorHeader]:
    """The MXFP4 blocks and scales that dequantize to an expert parameter of `shape` (`[experts, columns, rows]`)."""
    if len(shape) != 3 or shape[1] % (2 * MXFP4_BLOCK_BYTES):
        return {}
    experts, columns, rows = shape
    groups = (experts, rows, columns // (2 * MXFP4_BLOCK_BYTES))
    return {
        f"{parameter}_blocks": TensorHeader("U8", (*groups, MXFP4_BLOCK_BYTES)),
        f"{parameter}_scales": TensorHeader("U8", groups),
    }


def _combined_shape(
    config: PreTrainedConfig, parameter: str, names: list[str], headers: dict[str, TensorHeader]
) -> tuple[int, ...] | None:
    """The shape upstream's loading converter (e.g. NemotronH's per-expert tensors stacked into one) makes of `names`,
    run on meta tensors of their header shapes; `None` when they cannot be combined."""
    renamings, converters = _conversion_transforms(config)
    converter = None
    for name in names:
        renamed, pattern = rename_source_key(name, renamings, converters)
        if pattern is None:
            return None
        if converter is None:
            converter = copy.deepcopy(next(c for c in converters if pattern in c.source_patterns))
        meta = torch.empty(headers[name].shape, dtype=torch.float32, device="meta")
        converter.add_tensor(renamed, name, pattern, meta)
    try:
        with torch.device("meta"):
            combined = converter.convert(parameter, config=config)
    except Exception:  # the converter's own error: the tensors do not combine (e.g. shapes that do not stack)
        return None
    return tuple(next(iter(combined.values())).shape) if len(combined) == 1 else None


def _family_model_class(config: PreTrainedConfig) -> type:
    checkpoint_format = CHECKPOINT_FORMATS[config.model_type]
    return checkpoint_format.model_class(checkpoint_format.models["AutoModelForCausalLM"])


def _is_mxfp4(config: PreTrainedConfig) -> bool:
    quantization = getattr(config, "quantization_config", None) or {}
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return quantization.get("quant_method") == "mxfp4"


def _conversion_transforms(config: PreTrainedConfig) -> tuple[list[WeightRenaming], list[WeightConverter]]:
    """The renamings and the converters of upstream's checkpoint conversion mapping for `config.model_type`."""
    transforms = get_checkpoint_conversion_mapping(config.model_type) or []
    renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in transforms if isinstance(transform, WeightConverter)]
    return renamings, converters


def loading_rename(config: PreTrainedConfig) -> Callable[[str], str]:
    """The name a checkpoint tensor gets when upstream loads it into a model of `config`: the model type's checkpoint
    conversion mapping (`conversion_mapping.py`: renames, then at most one converter, as `rename_source_key` applies
    them), and for MXFP4 experts `{name}_blocks` / `{name}_scales` -> `{name}` (upstream's MXFP4 integration loads both
    into that parameter)."""
    renamings, converters = _conversion_transforms(config)
    mxfp4 = _is_mxfp4(config)

    def rename(name: str) -> str:
        if mxfp4:
            name = re.sub(r"_(blocks|scales)$", "", name)
        return rename_source_key(name, renamings, converters)[0]

    return rename


def save_shard(
    tensors: dict[str, torch.Tensor], destination: Path, metadata: dict[str, str] | None, error_cls: type[Exception]
) -> None:
    """`safetensors.torch.save_file`, with its I/O failures (a full disk) raised as the `OSError` they are.

    safetensors reports them as its own error type, with the OS error number in the text; made an `OSError` again, the
    staged output directory reports them as such. Any other safetensors failure is one `error_cls` line.
    """
    try:
        save_file(tensors, destination, metadata=metadata)
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise error_cls(f"Cannot write {destination.name}: {error}") from error
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(destination)) from error


def _rewrite_without(source: Path, destination: Path, dropped: set[str]) -> str:
    """Writes the shard without the dropped tensors (the one shard in memory at a time)."""
    with safe_open(source, framework="pt") as weights:
        metadata = weights.metadata()
        names = weights.keys()  # a safetensors handle is not iterable
        kept = {name: weights.get_tensor(name) for name in names if name not in dropped}
    save_shard(kept, destination, metadata, ConversionError)
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
