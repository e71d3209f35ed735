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
"""`transformers-heterogeneity inspect PATH`: the per-layer table of a checkpoint or config, without loading weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def inspect(
    path: Annotated[Path, typer.Argument(help="Checkpoint directory (with config.json) or a config.json file.")],
    dtype: Annotated[str, typer.Option(help="Element type of the KV cache, for the KV bytes.")] = "bfloat16",
    decoder_backend: Annotated[
        str | None,
        typer.Option(
            help="Show which backend would run each layer: 'transformer_engine', 'stock', or JSON such as "
            '\'{"transformer_engine": [0, 2]}\' or \'{"transformer_engine": "fp8_compatible"}\'. Needs no TE.'
        ),
    ] = None,
    fp8: Annotated[bool, typer.Option(help="With --decoder-backend: show which TE layers FP8 can run.")] = False,
) -> None:
    """Print each layer's sub-blocks (attention / linear / skipped), dimensions, parameters, KV bytes and FLOPs per
    token, and the model's totals. Works for any supported checkpoint, including nemotron-nas and deci."""
    import json

    import torch

    from ...models.auto import AutoConfig
    from ..backends.selection import TransformerEngineBackend, parse_decoder_backend
    from ..inspection import format_layer_table, summarize_config, unquantized

    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        typer.echo(f"Error: unknown dtype {dtype!r}; use a torch dtype name such as bfloat16 or float32.", err=True)
        raise typer.Exit(code=1)
    try:
        choice = None
        if decoder_backend is not None:
            choice = parse_decoder_backend(
                json.loads(decoder_backend) if decoder_backend[:1] == "{" else decoder_backend
            )
            if fp8 and choice is not None:
                choice = TransformerEngineBackend(layers=choice.layers, fp8=True)
        config = AutoConfig.from_pretrained(path)
        summary = summarize_config(unquantized(config), dtype=getattr(torch, dtype), decoder_backend=choice)
    except (OSError, ValueError) as error:
        typer.echo(f"Error: cannot inspect {path}: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(f"{path}: model_type {config.model_type}, {config.num_hidden_layers} layers")
    quantization = getattr(config, "quantization_config", None)
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
        typer.echo(f"{method}-quantized weights: the table describes the model dequantized, as it loads with them.")
    typer.echo(format_layer_table(summary))
