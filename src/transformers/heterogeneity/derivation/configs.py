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
"""The plain configs of `derive` and `search`: which init mode each kind of sub-block gets, the calibration data,
and the blockwise local distillation.

Each is a small frozen dataclass checked when it is made, so a typo in a mode name fails before any weight is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ..configuration_utils import HeterogeneousConfigError


__all__ = ["CalibrationConfig", "DeriveError", "DistillationConfig", "INIT_MODES", "InitConfig", "resolve_init"]


class DeriveError(HeterogeneousConfigError):
    """A child cannot be derived as asked: unknown mode, a layer out of range, missing or empty calibration data, a
    budget no choice meets. The message names the layer, attribute or value and the fix."""


# Kind of sub-block -> its init modes, the default first. The defaults are the modes that measured best in
# `benchmarks/derive.py` (held-out perplexity of the initialised child; README, "Performance").
INIT_MODES: dict[str, tuple[str, ...]] = {
    # FFN width (`intermediate_size`): channels kept by importance, the first ones, or a fresh random FFN.
    "ffn": ("importance", "truncate", "random"),
    # Fewer KV heads, the same query heads: each new KV head from the group of parent KV heads it stands for.
    "kv_heads": ("importance", "average", "first", "random"),
    # Fewer query heads (and, with the same group size, fewer KV heads): heads kept by importance or the first ones.
    "attention_heads": ("importance", "truncate", "random"),
    # An attention or MLP replaced by one linear map: least squares on calibration activations, the product of the
    # parent's value/output (or up/down) projections, or random.
    "linear": ("least_squares", "from_parent", "random"),
    # Fewer experts: those the router picks most on calibration data, the first ones, or random.
    "experts": ("importance", "truncate", "random"),
}

# Modes that read calibration activations.
CALIBRATED_MODES = frozenset({("ffn", "importance"), ("kv_heads", "importance"), ("attention_heads", "importance"),
                              ("linear", "least_squares"), ("experts", "importance")})  # fmt: skip


@dataclass(frozen=True)
class InitConfig:
    """The init mode of each kind of changed sub-block (`INIT_MODES` lists them, the default first).

    Sub-blocks that do not change are always copied bit for bit, whatever the modes. `derive(..., init="truncate")`
    sets every kind that has a mode of that name and leaves the others at their default; `init={"ffn": "random"}`
    sets one kind.
    """

    ffn: str = INIT_MODES["ffn"][0]
    kv_heads: str = INIT_MODES["kv_heads"][0]
    attention_heads: str = INIT_MODES["attention_heads"][0]
    linear: str = INIT_MODES["linear"][0]
    experts: str = INIT_MODES["experts"][0]

    def __post_init__(self):
        for kind in INIT_MODES:
            mode = getattr(self, kind)
            if mode not in INIT_MODES[kind]:
                raise DeriveError(
                    f"Unknown init mode {mode!r} for {kind}: choose one of {list(INIT_MODES[kind])} "
                    f"(default {INIT_MODES[kind][0]!r})."
                )

    def needs_calibration(self, kind: str) -> bool:
        return (kind, getattr(self, kind)) in CALIBRATED_MODES

    def to_dict(self) -> dict[str, str]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def resolve_init(init: InitConfig | str | Mapping[str, str] | None) -> InitConfig:
    """`derive`'s `init` argument as an `InitConfig`: `None` (defaults), a mode name for every kind that has it, a
    mapping of kind to mode, or an `InitConfig`."""
    if init is None:
        return InitConfig()
    if isinstance(init, InitConfig):
        return init
    if isinstance(init, str):
        kinds = {kind: init for kind, modes in INIT_MODES.items() if init in modes}
        if not kinds:
            every = sorted({mode for modes in INIT_MODES.values() for mode in modes})
            raise DeriveError(f"Unknown init mode {init!r}: choose one of {every}, or a mapping of kind to mode.")
        return InitConfig(**kinds)
    if isinstance(init, Mapping):
        unknown = sorted(set(init) - set(INIT_MODES))
        if unknown:
            raise DeriveError(f"Unknown sub-block kind {unknown[0]!r} in `init`: the kinds are {list(INIT_MODES)}.")
        return replace(InitConfig(), **dict(init))
    raise DeriveError(f"`init` must be a mode name, a mapping of kind to mode or an InitConfig, got {init!r}.")


@dataclass(frozen=True)
class CalibrationConfig:
    """Text the parent reads so that its activations can rank channels, fit linear maps, train blocks and score
    variants.

    Args:
        source: a text file (`.txt`, `.md`, `.py`, ... read whole; `.jsonl` with a `"text"` field per line), a folder
            of such files (read in sorted order), a list of strings, or `"dataset:NAME[:SPLIT]"` for a Hugging Face
            dataset with a `text` column (needs the `datasets` package).
        num_sequences: how many sequences of `sequence_length` tokens to cut from it (fewer if the text is short).
        sequence_length: tokens per sequence.
        batch_size: sequences per forward pass.
    """

    source: str | os.PathLike | Sequence[str]
    num_sequences: int = 64
    sequence_length: int = 256
    batch_size: int = 8

    def __post_init__(self):
        for name in ("num_sequences", "sequence_length", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeriveError(f"CalibrationConfig.{name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class DistillationConfig:
    """Blockwise local distillation (BLD): each changed layer of the child learns, alone, to reproduce the output of
    the parent's layer from the parent's own input to it (Puzzle, arXiv 2411.19146, section 3).

    Args:
        steps: optimizer steps per layer.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: calibration sequences per step.
        work_dir: where each trained layer is saved as it finishes, so an interrupted run resumes where it stopped
            (a temporary folder when `None`: no resuming). In a multi-process run every process must see it.
    """

    steps: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 8
    work_dir: str | os.PathLike | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeriveError(f"DistillationConfig.{name} must be a positive integer, got {value!r}.")
        if not self.learning_rate > 0:
            raise DeriveError(f"DistillationConfig.learning_rate must be positive, got {self.learning_rate!r}.")

    def to_dict(self) -> dict[str, Any]:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["work_dir"] = None if self.work_dir is None else str(self.work_dir)
        return values
