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
"""`transformers-heterogeneity convert SRC DST [--to FAMILY]`: a heterogeneous checkpoint in another form.

Without `--to`, a released family's checkpoint becomes the canonical stock form (model type plus `per_layer_config`);
with `--to nemotron-nas | gpt_oss_puzzle | nemotron_h_puzzle`, a model built here (or a checkpoint of any family)
becomes that family's released format, for the engines that serve it. One verb for both directions: the target
names the form, whatever form the source is in (a DeciLM-7B checkpoint converts to nemotron-nas directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import fail


# `export.EXPORT_FORMATS`, named here so that the command line imports no torch to list them (a test keeps them equal).
EXPORT_FAMILIES = ("nemotron-nas", "gpt_oss_puzzle", "nemotron_h_puzzle")


def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint directory (safetensors): a nemotron-nas, deci, gpt_oss_puzzle or nemotron_h_puzzle "
            "checkpoint, or with --to a model saved by this package."
        ),
    ],
    destination: Annotated[Path, typer.Argument(help="Directory to create for the converted checkpoint.")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help=f"Write a released family's format instead of the canonical form: one of {', '.join(EXPORT_FAMILIES)}. "
            "Prints which engines run the result.",
        ),
    ] = None,
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy the weight files instead of hard-linking them to the source's.")
    ] = False,
    drop_unused_tensors: Annotated[
        bool,
        typer.Option(
            "--drop-unused-tensors",
            help="Leave out tensors the family does not use and the stock model would not accept (fp8 KV-cache "
            "scales; with --to, every tensor the model does not hold); the shards holding them are rewritten.",
        ),
    ] = False,
) -> None:
    """Rewrite a checkpoint into its stock model type (llama, gpt_oss, nemotron_h) plus `per_layer_config`, or with
    --to into a released family's format.

    config.json is rewritten; the weights already have the stock names, so their files are hard-linked (or copied),
    never loaded, except shards that lose unused tensors with --drop-unused-tensors. On any error or interruption nothing
    is left at DESTINATION (a run killed with SIGKILL leaves a hidden staging directory beside it, which the next run
    for DESTINATION removes).

    With --to, the weights are read and written shard by shard (renamed to the family's names, FFN widths the format
    cannot express padded with zero channels, which is said), and what the format cannot express is refused by layer
    and field before anything is written.
    """
    if to is not None and to not in EXPORT_FAMILIES:
        raise typer.BadParameter(f"{to!r} is not one of {', '.join(EXPORT_FAMILIES)}.", param_hint="--to")
    if to is not None and copy:
        raise typer.BadParameter("an export always writes new weight files; --copy applies without --to.")
    from ..conversion import ConversionError, convert_checkpoint
    from ..export import ExportError, export_checkpoint
    from ..staging import OutputDirectoryError

    try:
        if to is None:
            convert_checkpoint(
                source, destination, link=not copy, progress=typer.echo, drop_unused=drop_unused_tensors
            )
        else:
            export_checkpoint(source, destination, to, progress=typer.echo, drop_unused=drop_unused_tensors)
    except (ConversionError, ExportError, OutputDirectoryError) as error:
        fail(str(error))
