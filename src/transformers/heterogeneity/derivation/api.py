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
"""`derive`: a heterogeneous child of a pretrained parent, in one call.

The parent is loaded (or taken as given), the child's config is the parent's with `per_layer_config` applied on top of
the parent's own per-layer overrides, the child is built and seeded, its sub-blocks are planned against the parent's
(`planning.py`), the parent's activations are measured on calibration data where a mode needs them
(`statistics.py`), every tensor is copied or initialised (`child_init.py`), and the changed layers are optionally
repaired by blockwise local distillation (`distillation.py`). The result is a stock `PreTrainedModel`; with
`output_dir`, it is saved with its tokenizer and its provenance record (`records.py`), all at once or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...configuration_utils import PreTrainedConfig
from ...modeling_utils import PreTrainedModel
from ...utils import logging
from ..configuration_utils import get_layer_overrides
from ..configuration_validation import parse_layer_key
from .calibration import load_calibration
from .child_init import initialize_child
from .configs import CALIBRATED_MODES as _CALIBRATED
from .configs import INIT_MODES, DeriveError, DistillationConfig, InitConfig, resolve_init
from .planning import INIT, SlotPlan, plan_child, statistics_request
from .records import DeriveRecord
from .statistics import ActivationStatistics, collect_statistics


logger = logging.get_logger(__name__)

__all__ = ["build_child_config", "derive", "load_parent", "save_child"]


def derive(
    parent: str | os.PathLike | PreTrainedModel,
    per_layer_config: Mapping[int | str, Mapping[str, Any]],
    *,
    init: InitConfig | str | Mapping[str, str] | None = None,
    calibration: Any = None,
    distillation: DistillationConfig | bool | None = None,
    tokenizer: Any = None,
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
) -> PreTrainedModel:
    """Makes a child of `parent` with the per-layer shapes of `per_layer_config`, its weights from the parent's.

    Sub-blocks that do not change are copied bit for bit (a `per_layer_config` that changes nothing gives the parent
    back, bit for bit); changed ones are initialised by the mode of their kind (`INIT_MODES`), and skipped ones
    dropped. The record of how each tensor was made is `child.derive_record` (`DeriveRecord`), written as
    `derivation.json` with the checkpoint.

    Args:
        parent: a local checkpoint directory, a Hub id, or a loaded `PreTrainedModel` of a supported architecture.
        per_layer_config: `{layer_idx: overrides}`, applied on top of the parent's own per-layer overrides (as
            `per_layer_config` in a config: attributes, `"skip": [...]`).
        init: init modes: a mode name for every kind that has it (`"truncate"`, `"random"`, ...), a mapping of kind
            to mode (`{"ffn": "importance", "kv_heads": "average"}`), or an `InitConfig`. Default: the modes that
            measured best (`InitConfig()`).
        calibration: text the parent reads to measure its activations (a file, a folder, a list of strings,
            `"dataset:NAME[:SPLIT]"`, a `CalibrationConfig`, or token ids `[num_sequences, sequence_length]`).
            Needed by the `importance`, `least_squares` modes and by distillation.
        distillation: blockwise local distillation of the changed layers (`DistillationConfig`; `True` for the
            defaults). Runs over the processes of a `torch.distributed` job when there is one.
        tokenizer: the tokenizer for calibration text (default: the parent's, when `parent` is a path).
        output_dir: when given, the child, its tokenizer and `derivation.json` are saved there (a directory that
            does not exist yet; nothing is left there on error).
        seed: seeds the child's own initialisation (the `random` mode) and the distillation.
        dtype: dtype to load a parent given as a path in (default: the checkpoint's).

    Returns:
        The child model (the same class as the parent's model), in evaluation mode.

    Raises:
        DeriveError: unknown mode, a layer out of range, calibration missing where a mode needs it, missing or empty
            calibration file, a change no mode can initialise.
        HeterogeneousConfigError: an override the architecture cannot honour (named by layer and attribute).
    """
    init_config = resolve_init(init)
    distillation_config = DistillationConfig() if distillation is True else (distillation or None)
    if output_dir is not None:
        from ..staging import check_destination

        check_destination(output_dir, what="derived checkpoint")
    parent_model, parent_name, tokenizer = load_parent(parent, tokenizer, dtype)
    child_config = build_child_config(parent_model.config, per_layer_config)
    child = build_child(parent_model, child_config, seed)
    plans = plan_child(parent_model, child, init_config)
    request = statistics_request(plans, init_config)
    _check_calibration_needed(plans, init_config, distillation_config, calibration)
    data = None if calibration is None else load_calibration(calibration, tokenizer)
    statistics = ActivationStatistics()
    if request:
        logger.info(f"Measuring the parent's activations on {data.num_tokens} calibration tokens.")
        statistics = collect_statistics(parent_model, request, data)
    record = DeriveRecord(
        parent=parent_name,
        per_layer_config={str(k): v for k, v in sorted(_overrides(child_config).items())},
        init=init_config.to_dict(),
        seed=seed,
        calibration=None if data is None else data.describe(),
    )
    initialize_child(parent_model, child, plans, statistics, record)
    if distillation_config is not None:
        from .distillation import blockwise_distill

        blockwise_distill(parent_model, child, record, data, distillation_config, seed=seed)
    child.eval()
    child.derive_record = record
    if output_dir is not None:
        save_child(child, output_dir, tokenizer=tokenizer)
    return child


def load_parent(parent: Any, tokenizer: Any, dtype: Any) -> tuple[PreTrainedModel, str, Any]:
    """The parent model, a name for it (for the record), and the tokenizer for calibration text."""
    from ...models.auto import AutoModelForCausalLM, AutoTokenizer

    if isinstance(parent, PreTrainedModel):
        return parent.eval(), str(getattr(parent, "name_or_path", "") or type(parent).__name__), tokenizer
    if not isinstance(parent, (str, os.PathLike)):
        raise DeriveError(f"`parent` must be a checkpoint path, a Hub id or a PreTrainedModel, got {type(parent)}.")
    model = AutoModelForCausalLM.from_pretrained(parent, dtype=dtype if dtype is not None else "auto").eval()
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(parent)
        except (OSError, ValueError) as error:
            logger.info(f"No tokenizer beside the parent {parent} ({error}); calibration text will need `tokenizer=`.")
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return model, str(parent), tokenizer


def build_child_config(parent_config: PreTrainedConfig, per_layer_config: Mapping) -> PreTrainedConfig:
    """The parent's config with `per_layer_config` applied on top of the parent's per-layer overrides.

    Raises:
        DeriveError: a layer index out of range or not an integer, overrides that are not a mapping.
        HeterogeneousConfigError: overrides the architecture refuses (named by layer and attribute).
    """
    if not isinstance(per_layer_config, Mapping):
        raise DeriveError(f"`per_layer_config` must map layer indices to overrides, got {type(per_layer_config)}.")
    num_layers = parent_config.num_hidden_layers
    merged = _overrides(parent_config)
    given_as: dict[int, Any] = {}
    for key, overrides in per_layer_config.items():
        layer_idx = parse_layer_key(key)
        if layer_idx is None:
            raise DeriveError(
                f"Key {key!r} of per_layer_config is not a layer index: keys are integers in [0, {num_layers}) or "
                "their decimal digits as strings."
            )
        if not 0 <= layer_idx < num_layers:
            raise DeriveError(
                f"Layer {key!r} of per_layer_config is out of range: the parent has {num_layers} layers "
                f"(0 to {num_layers - 1})."
            )
        if layer_idx in given_as:
            raise DeriveError(
                f"per_layer_config gives layer {layer_idx} twice, as {given_as[layer_idx]!r} and {key!r}; merge their "
                "overrides into one entry."
            )
        given_as[layer_idx] = key
        if not isinstance(overrides, Mapping):
            raise DeriveError(
                f"Layer {layer_idx}: overrides must be a mapping of attribute to value, got {overrides!r}."
            )
        merged.setdefault(layer_idx, {}).update(overrides)
    values = parent_config.to_dict()
    values["per_layer_config"] = {idx: overrides for idx, overrides in merged.items() if overrides} or None
    return type(parent_config).from_dict(values)


def build_child(parent: PreTrainedModel, config: PreTrainedConfig, seed: int) -> PreTrainedModel:
    """The child with the architecture's own initialisation, seeded, in the parent's dtype and on its device."""
    torch.manual_seed(seed)
    child = type(parent)._from_config(config, dtype=parent.dtype)
    return child.to(parent.device)


def save_child(child: PreTrainedModel, output_dir: str | os.PathLike, tokenizer: Any = None, extra=None) -> Path:
    """Saves the child, its tokenizer, `derivation.json` and `extra` files (`{name: text}`) to `output_dir`, which
    appears complete or not at all. In a multi-process run, only the first process writes."""
    from ..staging import staged_output_directory

    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return Path(output_dir)
    with staged_output_directory(output_dir, what="derived checkpoint") as staging:
        child.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        record = getattr(child, "derive_record", None)
        if record is not None:
            record.save(staging)
        for name, text in (extra or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
    return Path(output_dir)


def _overrides(config: PreTrainedConfig) -> dict[int, dict[str, Any]]:
    return {
        idx: get_layer_overrides(config, idx)
        for idx in range(config.num_hidden_layers)
        if get_layer_overrides(config, idx)
    }


def _check_calibration_needed(
    plans: list[SlotPlan], init: InitConfig, distillation: DistillationConfig | None, calibration: Any
) -> None:
    if calibration is not None:
        return
    for plan in plans:
        if plan.action == INIT and plan.mode != "random" and init.needs_calibration(plan.kind):
            other = next(m for m in INIT_MODES[plan.kind] if m != plan.mode and (plan.kind, m) not in _CALIBRATED)
            raise DeriveError(
                f"{plan.where} ({plan.change}): init mode {plan.kind}={plan.mode!r} measures the parent's activations "
                f"and needs calibration data; pass `calibration=` (a text file, ...), or choose a mode that does not "
                f"(e.g. init={{'{plan.kind}': '{other}'}})."
            )
    if distillation is not None:
        raise DeriveError("Blockwise distillation trains on the parent's activations and needs `calibration=`.")
