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
"""`transformers-heterogeneity demo`: a heterogeneous Llama end to end, on CPU, in seconds.

The demo derives a heterogeneous model from a small homogeneous Llama, builds it with random weights through the
stock Auto class, saves it as a sharded safetensors checkpoint, reloads it, checks that the reloaded model computes
the same logits bit for bit, generates a few tokens, and reports what the per-layer choices saved. It is both a
smoke test of an installation and the shortest tour of the feature.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer


if TYPE_CHECKING:
    from ...models.llama import LlamaConfig


# The homogeneous model the demo starts from: small enough that everything runs in seconds on one CPU core.
BASE_CONFIG = {
    "hidden_size": 256,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 768,
    "vocab_size": 512,
    # No special tokens: a random model could emit EOS and end generation early.
    "bos_token_id": None,
    "eos_token_id": None,
}

# One of each per-layer change; layers 0 and 7 keep the base dimensions.
DEMO_PER_LAYER_CONFIG = {
    1: {"intermediate_size": 512},
    2: {"num_key_value_heads": 2},
    3: {"skip": ["attention"]},
    4: {"intermediate_size": 384, "num_key_value_heads": 2},
    5: {"skip": ["mlp"]},
    6: {"intermediate_size": 256, "num_key_value_heads": 1},
}

PROMPT_IDS = [1, 15, 27, 99, 314]
MAX_NEW_TOKENS = 8
MAX_SHARD_SIZE = "8MB"  # the demo model holds about 19 MB of float32 weights: several shards and an index
SEED = 0


def demo_configs() -> tuple[LlamaConfig, LlamaConfig]:
    """The homogeneous base config and the heterogeneous config derived from it with `DEMO_PER_LAYER_CONFIG`."""
    from ...models.llama import LlamaConfig

    base = LlamaConfig(**BASE_CONFIG)
    return base, LlamaConfig.from_dict({**base.to_dict(), "per_layer_config": DEMO_PER_LAYER_CONFIG})


def demo(
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Where to save the checkpoint (kept). Defaults to a temporary directory."),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary checkpoint directory instead of deleting it at the end.")
    ] = False,
) -> None:
    """Build a small heterogeneous Llama, save and reload it, check the round trip, generate, and show the savings."""
    # Before the first heavy import: loading torch and the modeling code takes seconds on a cold start.
    typer.echo("Loading torch and Transformers...")
    from ...utils import logging

    # The progress bars of saving and loading would interleave with the demo's own lines.
    progress_bar_was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    checkpoint_dir = output_dir or Path(tempfile.mkdtemp(prefix="transformers-heterogeneity-demo-"))
    try:
        _run_demo(checkpoint_dir)
    finally:
        if progress_bar_was_enabled:
            logging.enable_progress_bar()
        if output_dir is None and not keep:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            typer.echo("Deleted the temporary checkpoint (pass --keep or --output-dir DIR to keep it).")
        else:
            typer.echo(f"Checkpoint kept in {checkpoint_dir}")


def _run_demo(checkpoint_dir: Path) -> None:
    import torch

    from ...models.auto import AutoModelForCausalLM
    from ..inspection import format_comparison, format_layer_table, summarize_config

    base_config, config = demo_configs()
    typer.echo(
        f"[1/5] Base model: Llama with {base_config.num_hidden_layers} layers, hidden size {base_config.hidden_size}, "
        f"{base_config.num_attention_heads} heads, {base_config.num_key_value_heads} KV heads, FFN width "
        f"{base_config.intermediate_size}, vocabulary {base_config.vocab_size}."
    )

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config).eval()
    typer.echo(
        f"[2/5] Built {type(model).__name__} with per_layer_config on layers {sorted(DEMO_PER_LAYER_CONFIG)} "
        f"(random weights, seed {SEED})."
    )

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(checkpoint_dir, max_shard_size=MAX_SHARD_SIZE)
    num_shards = len(list(checkpoint_dir.glob("*.safetensors")))
    saved_per_layer_config = json.loads((checkpoint_dir / "config.json").read_text())["per_layer_config"]
    typer.echo(f"[3/5] Saved to {checkpoint_dir}: {num_shards} safetensors shards and model.safetensors.index.json.")
    typer.echo("      per_layer_config in config.json:")
    for layer, overrides in saved_per_layer_config.items():
        typer.echo(f"        {json.dumps(layer)}: {json.dumps(overrides)}")

    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint_dir).eval()
    input_ids = torch.tensor([PROMPT_IDS])
    with torch.no_grad():
        logits, reloaded_logits = model(input_ids).logits, reloaded(input_ids).logits
    if not torch.equal(logits, reloaded_logits):
        typer.echo(
            "Round trip FAILED: the reloaded model's logits differ from the original's (max abs difference "
            f"{(logits - reloaded_logits).abs().max().item():.3e}).",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo("[4/5] Reloaded with AutoModelForCausalLM.from_pretrained: logits equal the original's bit for bit.")

    typer.echo(f"      generating {MAX_NEW_TOKENS} tokens greedily, with and without the KV cache...")
    generated = reloaded.generate(input_ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    generated_without_cache = reloaded.generate(
        input_ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, use_cache=False
    )
    if not torch.equal(generated, generated_without_cache):
        typer.echo(
            f"Generation FAILED: cached decoding gave {generated[0].tolist()}, uncached decoding gave "
            f"{generated_without_cache[0].tolist()}.",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"[5/5] Greedy generation of {MAX_NEW_TOKENS} tokens: cached and uncached decoding agree.")

    dtype = reloaded.dtype
    summary = summarize_config(config, dtype=dtype)
    typer.echo(f"\nPer-layer table of the heterogeneous model:\n{format_layer_table(summary)}")
    comparison = format_comparison(summarize_config(base_config, dtype=dtype), summary, "homogeneous", "heterogeneous")
    typer.echo(f"\nAgainst the homogeneous model it came from:\n{comparison}")
    typer.echo(f"\nPrompt token ids:    {PROMPT_IDS}")
    typer.echo(f"Generated token ids: {generated[0, len(PROMPT_IDS) :].tolist()}")
    typer.echo("\nDemo passed: the heterogeneous model round-trips bit for bit and generates.")
