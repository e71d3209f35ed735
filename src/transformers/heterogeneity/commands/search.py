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
"""`transformers-heterogeneity search PARENT OUT --budget ...`: the best child of a pretrained model under budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import fail
from .derive import (
    CALIBRATION_HELP,
    Dtype,
    LearningRate,
    NumSequences,
    Seed,
    SequenceLength,
    calibration_option,
    parse_init_option,
    parse_json_option,
)


def search(
    parent: Annotated[
        str, typer.Argument(help="Parent checkpoint directory (or Hub id) of a supported architecture.")
    ],
    output: Annotated[Path, typer.Argument(help="Directory to create for the chosen child (must not exist).")],
    budget: Annotated[
        list[str],
        typer.Option(
            help="NAME=VALUE, repeatable: params, kv_bytes, flops (or latency with --measure-latency), as a share of "
            "the parent's decoder layers ('params=50%') or absolute ('params=1.5e6')."
        ),
    ],
    calibration: Annotated[str, typer.Option(help=CALIBRATION_HELP)],
    variants: Annotated[
        str | None,
        typer.Option(
            help="The layer variants to choose from, as JSON or a JSON file: a list of per-layer overrides "
            '(\'[{"num_key_value_heads": 2}, {"skip": ["attention"]}]\'). Default: fewer KV heads, linear or skipped '
            "attention, 3/4, 1/2, 1/4 FFN width, linear or skipped MLP, and their combinations."
        ),
    ] = None,
    init: Annotated[str | None, typer.Option(help="Init modes, as for `derive`.")] = None,
    num_sequences: NumSequences = 32,
    sequence_length: SequenceLength = 256,
    distill_steps: Annotated[
        int, typer.Option(help="Blockwise local distillation steps for every variant of the library (0: none).")
    ] = 0,
    learning_rate: LearningRate = 1e-3,
    measure_latency: Annotated[
        bool, typer.Option("--measure-latency", help="Time every variant's forward; makes `latency` a cost.")
    ] = False,
    seed: Seed = 0,
    dtype: Dtype = None,
) -> None:
    """Pick one variant per layer of PARENT under the budgets and save that child to OUTPUT.

    Every variant of every layer is initialised from the parent, scored by the KL divergence of the parent's
    next-token distribution when it replaces that one layer, and costed; an exact mixed-integer program (SciPy HiGHS)
    picks the best choice under the budgets. OUTPUT gets the child checkpoint, derivation.json, search.json (library,
    scores, costs, choice) and search.md (the table printed here). On any error nothing is left at OUTPUT.
    """
    library = None if variants is None else parse_json_option(variants, "--variants")
    if library is not None and not isinstance(library, list):
        fail("--variants: expected a JSON list of per-layer overrides.")
    from ..configuration_utils import HeterogeneousConfigError
    from ..derivation.configs import CalibrationConfig, DistillationConfig
    from ..derivation.search import search as search_child
    from ..staging import OutputDirectoryError

    try:
        result = search_child(
            parent,
            budget,
            calibration=calibration_option(calibration, num_sequences, sequence_length, CalibrationConfig),
            variants=library,
            init=parse_init_option(init),
            distillation=DistillationConfig(steps=distill_steps, learning_rate=learning_rate)
            if distill_steps
            else None,
            measure_latency=measure_latency,
            output_dir=output,
            seed=seed,
            dtype=dtype,
        )
    except (HeterogeneousConfigError, OutputDirectoryError, OSError) as error:
        fail(str(error))
    typer.echo(result.table())
    typer.echo(f"\nSaved the child to {output} (search.json and search.md hold the library, scores and costs).")
