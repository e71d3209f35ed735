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
"""The provenance record of a derived child: how each of its tensors was made, written with the checkpoint.

`derivation.json` beside `config.json` holds the parent, the `per_layer_config`, the init modes, the calibration data
and the distillation settings (blockwise, and global if the whole child was trained after it), one entry per changed
sub-block (what changed, the mode, which channels / heads / experts of the parent it kept) and one entry per tensor of
the child (copied from which parent tensor, or made by which sub-block's init, and whether blockwise distillation then
trained it). Stock Transformers ignores the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


__all__ = ["RECORD_FILE", "DeriveRecord", "SubBlockRecord", "TensorRecord"]

RECORD_FILE = "derivation.json"
COPIED = "copied"


@dataclass
class SubBlockRecord:
    """One sub-block of the child that is not a copy of the parent's.

    Attributes:
        layer: layer index.
        slot: the sub-block slot (`attention`, `mlp`, `mixer`).
        change: what differs from the parent, e.g. `"intermediate_size 128 -> 64"`.
        kind: the kind of init (`ffn`, `kv_heads`, `attention_heads`, `linear`, `experts`), `None` when dropped.
        mode: the init mode of that kind, `None` when dropped.
        kept: the parent's units the child kept, by unit (`channels`, `query_heads`, `kv_heads`, `experts`).
    """

    layer: int
    slot: str
    change: str
    kind: str | None = None
    mode: str | None = None
    kept: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class TensorRecord:
    """How one tensor of the child was made: `how` is `"copied"` (bit for bit, from `source[0]`) or
    `"<kind>:<mode>"` (from the parent tensors in `source`, by the init of sub-block `sub_block`); `distilled` says
    whether blockwise local distillation trained it afterwards. Global distillation, when the record says so
    (`DeriveRecord.global_distillation`), trained every tensor after that."""

    how: str
    source: list[str] = field(default_factory=list)
    sub_block: int | None = None
    distilled: bool = False


@dataclass
class DeriveRecord:
    parent: str
    per_layer_config: dict[str, Any]
    init: dict[str, str]
    seed: int
    calibration: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None
    global_distillation: dict[str, Any] | None = None
    sub_blocks: list[SubBlockRecord] = field(default_factory=list)
    tensors: dict[str, TensorRecord] = field(default_factory=dict)

    def add_sub_block(self, record: SubBlockRecord) -> int:
        self.sub_blocks.append(record)
        return len(self.sub_blocks) - 1

    def copied(self, name: str, source: str) -> None:
        self.tensors[name] = TensorRecord(COPIED, [source])

    def made(self, name: str, how: str, sources: list[str], sub_block: int | None) -> None:
        self.tensors[name] = TensorRecord(how, sources, sub_block)

    def not_copied(self) -> list[str]:
        """Names of the tensors that are not bit-for-bit copies of a parent tensor."""
        return [name for name, tensor in self.tensors.items() if tensor.how != COPIED]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / RECORD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> DeriveRecord:
        values = json.loads((Path(directory) / RECORD_FILE).read_text(encoding="utf-8"))
        values["sub_blocks"] = [SubBlockRecord(**entry) for entry in values["sub_blocks"]]
        values["tensors"] = {name: TensorRecord(**entry) for name, entry in values["tensors"].items()}
        return cls(**values)
