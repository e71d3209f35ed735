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
"""`transformers-heterogeneity derive PARENT OUT`: a heterogeneous child of a pretrained model, as a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from . import fail


# Options that `derive` and `search` share.
CALIBRATION_HELP = "Calibration text: a file (.txt, .jsonl with 'text'), a folder, or dataset:NAME[:SPLIT]."
Calibration = Annotated[str | None, typer.Option(help=CALIBRATION_HELP)]
NumSequences = Annotated[int, typer.Option(help="Calibration sequences to read.")]
SequenceLength = Annotated[int, typer.Option(help="Tokens per calibration sequence.")]
LearningRate = Annotated[float, typer.Option(help="Learning rate of the blockwise distillation.")]
Seed = Annotated[int, typer.Option(help="Seed of random init modes and of the distillation.")]
Dtype = Annotated[str | None, typer.Option(help="dtype to load the parent in (default: the checkpoint's).")]


def derive(
    parent: Annotated[
        str, typer.Argument(help="Parent checkpoint directory (or Hub id) of a supported architecture.")
    ],
    output: Annotated[Path, typer.Argument(help="Directory to create for the child checkpoint (must not exist).")],
    per_layer_config: Annotated[
        str,
        typer.Option(
            "--per-layer-config",
            help='The child\'s per-layer overrides, as JSON (\'{"1": {"intermediate_size": 512}}\') or a JSON file.',
        ),
    ],
    init: Annotated[
        str | None,
        typer.Option(
            help="Init modes: one name for every kind that has it (importance, truncate, average, first, "
            'least_squares, from_parent, random) or JSON per kind (\'{"ffn": "importance", "kv_heads": "average"}\'). '
            "Default: the modes that measured best."
        ),
    ] = None,
    calibration: Calibration = None,
    num_sequences: NumSequences = 64,
    sequence_length: SequenceLength = 256,
    distill_steps: Annotated[
        int, typer.Option(help="Blockwise local distillation steps per changed layer (0: none).")
    ] = 0,
    learning_rate: LearningRate = 1e-3,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where trained blocks are kept, to resume an interrupted distillation (shared by processes)."
        ),
    ] = None,
    global_distill_steps: Annotated[
        int, typer.Option(help="Steps of global distillation of the whole child with the stock Trainer (0: none).")
    ] = 0,
    seed: Seed = 0,
    dtype: Dtype = None,
) -> None:
    """Derive a child with the given per-layer shapes from PARENT's weights and save it to OUTPUT.

    Unchanged sub-blocks are copied bit for bit, changed ones initialised from the parent (and optionally trained by
    blockwise local distillation); OUTPUT gets a standard checkpoint that the stock Auto classes load, the parent's
    tokenizer and derivation.json (how each tensor was made). On any error nothing is left at OUTPUT. Run it under
    `torchrun` or `accelerate launch` to spread the distillation over processes.
    """
    overrides = parse_json_option(per_layer_config, "--per-layer-config")
    from ..configuration_utils import HeterogeneousConfigError
    from ..derivation.api import derive as derive_child
    from ..derivation.api import load_parent, save_child
    from ..derivation.calibration import load_calibration
    from ..derivation.configs import CalibrationConfig, DistillationConfig
    from ..derivation.global_distillation import distill_globally
    from ..staging import OutputDirectoryError, check_destination

    calibration_config = calibration_option(calibration, num_sequences, sequence_length, CalibrationConfig)
    if global_distill_steps and calibration_config is None:
        fail("--global-distill-steps trains on calibration text: pass --calibration.")
    try:
        check_destination(output, what="derived checkpoint")
        distillation = None
        if distill_steps:
            distillation = DistillationConfig(steps=distill_steps, learning_rate=learning_rate, work_dir=work_dir)
        parent_model, _, tokenizer = load_parent(parent, None, dtype)
        child = derive_child(
            parent_model,
            overrides,
            init=parse_init_option(init),
            calibration=calibration_config,
            distillation=distillation,
            tokenizer=tokenizer,
            seed=seed,
        )
        if global_distill_steps:
            data = load_calibration(calibration_config, tokenizer)
            distill_globally(child, parent_model, data, steps=global_distill_steps, seed=seed)
        save_child(child, output, tokenizer=tokenizer)
    except (HeterogeneousConfigError, OutputDirectoryError, OSError) as error:
        fail(str(error))
    typer.echo(f"Saved the child to {output} (derivation.json records how each tensor was made).")
    for entry in child.derive_record.sub_blocks:
        how = "dropped" if entry.kind is None else f"{entry.kind}:{entry.mode}"
        typer.echo(f"  layer {entry.layer} {entry.slot}: {entry.change} ({how})")


def parse_json_option(value: str, option: str) -> Any:
    """The JSON of an option given inline (`{...}`, `[...]`) or as a file path."""
    text = value
    if not value.lstrip().startswith(("{", "[")):
        path = Path(value)
        if not path.is_file():
            fail(f"{option}: {value!r} is neither JSON nor an existing file.")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{option}: invalid JSON ({error}).")


def parse_init_option(value: str | None) -> Any:
    if value is None or not value.lstrip().startswith("{"):
        return value
    return parse_json_option(value, "--init")


def calibration_option(source: str | None, num_sequences: int, sequence_length: int, config_cls) -> Any:
    if source is None:
        return None
    return config_cls(source=source, num_sequences=num_sequences, sequence_length=sequence_length)
