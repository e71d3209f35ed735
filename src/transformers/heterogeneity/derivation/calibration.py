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
"""Calibration data: the text a parent reads so that `derive` can measure its activations.

Text is tokenized with the parent's tokenizer, documents joined (with the EOS token between them where the tokenizer
has one) and cut into `num_sequences` non-overlapping sequences of `sequence_length` tokens, in reading order, so the
same source always gives the same batches. Token ids (a `[num_sequences, sequence_length]` tensor) can be given
directly, e.g. for a model without a tokenizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...utils import logging
from .configs import CalibrationConfig, DeriveError


logger = logging.get_logger(__name__)

__all__ = ["CalibrationData", "load_calibration"]

DATASET_PREFIX = "dataset:"
# Characters read per token needed: generous for any tokenizer, so a large file is not read whole.
_CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class CalibrationData:
    """Calibration sequences, `[num_sequences, sequence_length]` token ids, and where they came from."""

    input_ids: torch.Tensor
    source: str
    batch_size: int

    def batches(self, batch_size: int | None = None) -> Iterator[torch.Tensor]:
        size = batch_size or self.batch_size
        for start in range(0, len(self.input_ids), size):
            yield self.input_ids[start : start + size]

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def describe(self) -> dict[str, Any]:
        """For the provenance record."""
        return {
            "source": self.source,
            "num_sequences": int(self.input_ids.shape[0]),
            "sequence_length": int(self.input_ids.shape[1]),
        }


def load_calibration(calibration: Any, tokenizer: Any = None) -> CalibrationData:
    """Reads calibration data from what `derive`'s `calibration` argument accepts (see `CalibrationConfig.source`; a
    `CalibrationConfig`, or a bare source with the default sizes, or a `[N, T]` tensor of token ids).

    Raises:
        DeriveError: the file or folder is missing, empty or unreadable, text is given without a tokenizer, or the
            text holds fewer tokens than one sequence.
    """
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2 or calibration.numel() == 0 or calibration.is_floating_point():
            raise DeriveError(
                f"Calibration token ids must be a non-empty [num_sequences, sequence_length] integer tensor, got shape "
                f"{tuple(calibration.shape)} of {calibration.dtype}."
            )
        return CalibrationData(calibration.long(), f"token ids {tuple(calibration.shape)}", batch_size=8)
    config = calibration if isinstance(calibration, CalibrationConfig) else CalibrationConfig(source=calibration)
    if tokenizer is None:
        raise DeriveError(
            "Calibration text needs the parent's tokenizer, and none was found beside the parent: pass `tokenizer=` "
            "(a tokenizer or its path), or calibration token ids as a [num_sequences, sequence_length] tensor."
        )
    wanted = config.num_sequences * config.sequence_length
    texts, source = _read_texts(config.source, wanted * _CHARS_PER_TOKEN)
    ids = _token_stream(texts, tokenizer, wanted)
    if len(ids) < config.sequence_length:
        raise DeriveError(
            f"Calibration {source} holds {len(ids)} tokens, fewer than one sequence of sequence_length="
            f"{config.sequence_length}: give more text or a shorter sequence length."
        )
    num_sequences = min(config.num_sequences, len(ids) // config.sequence_length)
    if num_sequences < config.num_sequences:
        logger.warning(
            f"Calibration {source} gives {num_sequences} sequences of {config.sequence_length} tokens, fewer than the "
            f"{config.num_sequences} asked for."
        )
    input_ids = torch.tensor(ids[: num_sequences * config.sequence_length]).reshape(num_sequences, -1)
    return CalibrationData(input_ids, source, batch_size=config.batch_size)


def _read_texts(source: str | os.PathLike | Sequence[str], max_chars: int) -> tuple[list[str], str]:
    """The documents of `source`, reading no more than about `max_chars` characters, and how to name the source."""
    if isinstance(source, (list, tuple)):
        if not source or not all(isinstance(text, str) for text in source):
            raise DeriveError("Calibration texts must be a non-empty list of strings.")
        texts = [text for text in source if text.strip()]
        if not texts:
            raise DeriveError("Calibration texts are all empty.")
        return texts, f"({len(source)} texts)"
    if isinstance(source, str) and source.startswith(DATASET_PREFIX):
        return _dataset_texts(source[len(DATASET_PREFIX) :], max_chars), source
    path = Path(source)
    if not path.exists():
        raise DeriveError(
            f"Calibration file {path} does not exist. Give a text or .jsonl file, a folder of them, or "
            f"'{DATASET_PREFIX}NAME[:SPLIT]' for a Hugging Face dataset."
        )
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    texts, total = [], 0
    for file in files:
        if total >= max_chars:
            break
        for text in _file_texts(file, max_chars - total):
            if text.strip():
                texts.append(text)
                total += len(text)
    if not texts:
        raise DeriveError(f"Calibration {'folder' if path.is_dir() else 'file'} {path} is empty: it holds no text.")
    return texts, str(path)


def _file_texts(file: Path, max_chars: int) -> list[str]:
    try:
        with open(file, encoding="utf-8", errors="replace") as handle:
            if file.suffix == ".jsonl":
                texts = []
                for line_number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise DeriveError(f'Calibration file {file}, line {line_number}: expected {{"text": ...}}.')
                    texts.append(record["text"])
                    max_chars -= len(record["text"])
                    if max_chars <= 0:
                        break
                return texts
            return [handle.read(max_chars)]
    except (OSError, json.JSONDecodeError) as error:
        raise DeriveError(f"Cannot read calibration file {file}: {error}") from error


def _dataset_texts(name: str, max_chars: int) -> list[str]:
    try:
        import datasets
    except ImportError as error:
        raise DeriveError(
            f"Calibration '{DATASET_PREFIX}{name}' needs the `datasets` package (`pip install datasets`)."
        ) from error
    dataset_name, _, split = name.partition(":")
    dataset = datasets.load_dataset(dataset_name, split=split or "train", streaming=True)
    texts, total = [], 0
    for row in dataset:
        if "text" not in row:
            raise DeriveError(f"Dataset {dataset_name} has no `text` column (columns: {sorted(row)}).")
        texts.append(row["text"])
        total += len(row["text"])
        if total >= max_chars:
            break
    if not texts:
        raise DeriveError(f"Dataset {dataset_name} (split {split or 'train'}) is empty.")
    return texts


def _token_stream(texts: list[str], tokenizer: Any, wanted: int) -> list[int]:
    separator = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    ids: list[int] = []
    for text in texts:
        if ids:
            ids.extend(separator)
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= wanted:
            break
    return ids
