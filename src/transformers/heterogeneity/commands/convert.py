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
"""`transformers-heterogeneity convert SRC DST`: a heterogeneous checkpoint in the canonical stock form."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="A nemotron-nas, deci, gpt_oss_puzzle or nemotron_h_puzzle checkpoint directory (safetensors)."
        ),
    ],
    destination: Annotated[Path, typer.Argument(help="Directory to create for the converted checkpoint.")],
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy the weight files instead of hard-linking them to the source's.")
    ] = False,
    drop_unused_tensors: Annotated[
        bool,
        typer.Option(
            "--drop-unused-tensors",
            help="Leave out tensors the family does not use and the stock model would not accept (fp8 KV-cache "
            "scales); the shards holding them are rewritten.",
        ),
    ] = False,
) -> None:
    """Rewrite a checkpoint into its stock model type (llama, gpt_oss, nemotron_h) plus `per_layer_config`.

    config.json is rewritten; the weights already have the stock names, so their files are hard-linked (or copied),
    never loaded, except shards that lose unused tensors with --drop-unused-tensors. On any error or interruption nothing
    is left at DESTINATION (a run killed with SIGKILL leaves a hidden staging directory beside it, which the next run
    for DESTINATION removes).
    """
    from ..conversion import ConversionError, convert_checkpoint
    from ..staging import OutputDirectoryError

    try:
        convert_checkpoint(source, destination, link=not copy, progress=typer.echo, drop_unused=drop_unused_tensors)
    except (ConversionError, OutputDirectoryError) as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(code=1) from error
