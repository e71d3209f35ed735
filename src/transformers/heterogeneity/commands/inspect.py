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

from . import fail


def inspect(
    path: Annotated[Path, typer.Argument(help="Local checkpoint directory (with config.json) or a config.json file.")],
    dtype: Annotated[
        str | None,
        typer.Option(help="Element type of the KV cache, for the KV bytes. Defaults to the checkpoint's dtype."),
    ] = None,
    decoder_backend: Annotated[
        str | None,
        typer.Option(
            help="Show which backend would run each layer: 'transformer_engine', 'stock', or JSON such as "
            '\'{"transformer_engine": [0, 2]}\' or \'{"transformer_engine": "fp8_compatible"}\'. Needs no TE.'
        ),
    ] = None,
    fp8: Annotated[bool, typer.Option(help="With --decoder-backend: show which TE layers FP8 can run.")] = False,
    fp8_alignment: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --decoder-backend: what the FP8 recipe needs of every GEMM dimension (for --fp8 and the "
            "'fp8_compatible' rule): 16 for TE's per-tensor recipes (the default below Blackwell), 32 for MXFP8 (the "
            "default on Blackwell).",
        ),
    ] = 16,
) -> None:
    """Print each layer's sub-blocks (attention / linear / skipped), dimensions, parameters, KV bytes and FLOPs per
    token, and the model's totals. Works for any supported checkpoint, including nemotron-nas and deci. Reads only
    local files (config.json and the safetensors headers); it never downloads."""
    config_file = _local_config_file(path)  # before the heavy imports: a wrong path fails at once
    import json

    import torch
    from huggingface_hub.errors import StrictDataclassError

    from ...models.auto import AutoConfig
    from ..backends.selection import TransformerEngineBackend, parse_decoder_backend
    from ..inspection import checkpoint_dtype, format_layer_table, summarize_config, unquantized

    if dtype is not None and not isinstance(getattr(torch, dtype, None), torch.dtype):
        fail(f"unknown dtype {dtype!r}; use a torch dtype name such as bfloat16 or float32.")
    try:
        choice = None
        if decoder_backend is not None:
            choice = parse_decoder_backend(
                json.loads(decoder_backend) if decoder_backend[:1] == "{" else decoder_backend
            )
            if fp8 and choice is not None:
                choice = TransformerEngineBackend(layers=choice.layers, fp8=True)
        # Local files only, as with HF_HUB_OFFLINE=1: a mistyped path must not turn into Hub requests and retries.
        config = AutoConfig.from_pretrained(config_file, local_files_only=True)
        if dtype is None:
            kv_dtype, source = checkpoint_dtype(config, config_file.parent)
        else:
            kv_dtype, source = getattr(torch, dtype), "--dtype"
        summary = summarize_config(
            unquantized(config), dtype=kv_dtype, decoder_backend=choice, fp8_alignment=fp8_alignment
        )
    except (OSError, ValueError, StrictDataclassError) as error:  # upstream's `@strict` config fields raise the last
        fail(f"cannot inspect {path}: {' '.join(str(error).split())}")
    typer.echo(f"{path}: model_type {config.model_type}, {config.num_hidden_layers} layers")
    quantization = getattr(config, "quantization_config", None)
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
        typer.echo(f"{method}-quantized weights: the table describes the model dequantized, as it loads with them.")
    typer.echo(f"KV cache in {str(kv_dtype).removeprefix('torch.')} ({source}; --dtype to change)")
    typer.echo(format_layer_table(summary))


def _local_config_file(path: Path) -> Path:
    """The config.json that `path` names, or a clear error: `path` does not exist, or is a folder without one."""
    if not path.exists():
        fail(
            f"{path} does not exist. `inspect` reads a local checkpoint directory or config.json and never downloads; "
            "for a model on the Hugging Face Hub, fetch its config first (`hf download REPO_ID config.json "
            "--local-dir DIR`) and inspect DIR."
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            fail(f"{path} has no config.json: `inspect` needs the checkpoint's config (it reads no weights).")
        return path / "config.json"
    return path
