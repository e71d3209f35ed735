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
"""`transformers serve --continuous-batching` end to end on a heterogeneous checkpoint made here.

The real server runs in its own process (started the way a user starts it, with the package activated by its `.pth`
file), on loopback and a free port, and is always stopped; requests name the local checkpoint folder to serve. The `openai` client sends concurrent completions,
streamed and not; every completion must be the greedy `generate` of the same checkpoint loaded in this process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai  # the `serving` extra, part of `testing`
import pytest
import torch

from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from .conftest import ARCHS, build_model


NUM_REQUESTS = 16
MAX_TOKENS = 6
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
# Per-layer KV heads, a window on most layers (full attention on one), a skipped attention and another head_dim.
PER_LAYER = {1: {"sliding_window": None, "num_key_value_heads": 1}, 2: {"skip": ["attention"]}, 3: {"head_dim": 8}}


def word(token_id: int) -> str:
    return f"w{token_id}"


def write_checkpoint(path: Path, per_layer: dict) -> Path:
    """A heterogeneous Mistral (`save_pretrained`: per_layer_config in config.json) and a word-level tokenizer whose
    every token is one whitespace-separated word, built with the `tokenizers` library (nothing from the Hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = build_model(ARCHS["mistral"], per_layer, 4, "sdpa", sliding_window=5)
    model.save_pretrained(path)
    vocab = {word(i): i for i in range(model.config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=word(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(path)
    return path


def free_port() -> int:
    """A port that is free now; the server binds it a moment later (engineers run tests side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def transformers_cli() -> str:
    return shutil.which("transformers", path=os.path.dirname(sys.executable)) or "transformers"


@contextlib.contextmanager
def running_server(log_path: Path) -> Iterator[str]:
    """`transformers serve --continuous-batching` in a subprocess, stopped on exit whatever happens; yields its base
    URL. No model is pinned: each request names the checkpoint folder to serve, which the server loads on first use."""
    port = free_port()
    command = [
        transformers_cli(), "serve", "--continuous-batching", "--host", "127.0.0.1",
        "--port", str(port), "--device", "cpu", "--cb-num-blocks", "256", "--cb-max-batch-tokens", "48",
        "--log-level", "info",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module; yields (base_url, folder of the checkpoints, log path)."""
    folder = tmp_path_factory.mktemp("served")
    log_path = folder / "server.log"
    with running_server(log_path) as base_url:
        yield base_url, folder, log_path


def prompt_words(num_requests: int, vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(5)
    lengths = [3 + (7 * i) % 11 for i in range(num_requests)]  # 3 to 13 tokens, a window is 5
    return [torch.randint(1, vocab_size, (length,), generator=generator).tolist() for length in lengths]


def complete(client, checkpoint: Path, prompt: list[int], stream: bool) -> str:
    text = " ".join(word(token_id) for token_id in prompt)
    kwargs = {"model": str(checkpoint), "prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0.0}
    if not stream:
        return client.completions.create(**kwargs).choices[0].text
    return "".join(chunk.choices[0].text for chunk in client.completions.create(**kwargs, stream=True))


def test_concurrent_completions_equal_generate(server):
    base_url, folder, log_path = server
    checkpoint = write_checkpoint(folder / "checkpoint", PER_LAYER)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoint)
    batch = prompt_words(NUM_REQUESTS, model.config.vocab_size)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0)
    with ThreadPoolExecutor(max_workers=NUM_REQUESTS) as pool:
        futures = [pool.submit(complete, client, checkpoint, prompt, i % 2 == 0) for i, prompt in enumerate(batch)]
        texts = [future.result(timeout=REQUEST_TIMEOUT_S) for future in futures]

    for i, (prompt, text) in enumerate(zip(batch, texts)):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False)
        expected = out[0, len(prompt) :].tolist()
        served = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert served == expected, f"request {i} ({'streamed' if i % 2 == 0 else 'whole'}): {text!r}"
    log = log_path.read_text()
    assert "CB: True" in log and "Per-layer paged cache" in log, log[-3000:]


def test_an_unservable_checkpoint_gets_an_error_never_an_empty_completion(server):
    """Layers with different windows cannot be paged: the request fails with the refusal, naming the layers."""
    base_url, folder, log_path = server
    checkpoint = write_checkpoint(folder / "different-windows", {1: {"sliding_window": 3}})
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0)
    with pytest.raises(openai.APIStatusError) as error:
        client.completions.create(model=str(checkpoint), prompt="w1 w2 w3", max_tokens=MAX_TOKENS, temperature=0)
    assert error.value.status_code >= 500
    # The server logs the traceback after it has answered.
    deadline = time.monotonic() + 30
    while "UnservableLayerError: Layers have different sliding windows" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
