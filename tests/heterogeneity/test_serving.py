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
"""`transformers serve` end to end on a heterogeneous checkpoint of every supported family, with and without
`--continuous-batching`.

Two real servers run for the module (one per mode), each in its own process started the way a user starts it (the
package activated by its `.pth` file), on loopback and a free port, and always stopped. No model is pinned: requests
name the local checkpoint folder to serve, in the format each family is published in (`save_pretrained` with
`per_layer_config` for stock architectures; Nemotron-NAS, gpt-oss-puzzle and Nemotron-H Puzzle `config.json` and
shards as released). The `openai` client sends concurrent greedy completions, streamed and not, with prompts shorter
and longer than every window; every completion must be the greedy `generate` of the same checkpoint loaded in this
process, on the ids that the saved tokenizer, loaded as the server loads it (`AutoProcessor`), gives the prompt text.
Requests the server cannot take get a client error that says why, and never disturb the others.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai  # the `serving` extra, part of `testing`
import pytest
import torch

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoProcessor,
    GptOssConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
)
from transformers.heterogeneity.serving import max_request_tokens

from . import checkpoints, gpt_oss_checkpoints, nemotron_h_puzzle_checkpoint
from .common_models import TINY_MODELS
from .conftest import ARCHS, build_config, build_model, randomize_weights
from .gpt_oss_checkpoints import GPT_OSS_GLOBALS


START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
MAX_TOKENS = 5
# Longer than no window (1), than some (4, 6: windows 3 to 8) and than every one (9, 14).
PROMPT_LENGTHS = (1, 4, 6, 9, 14)
CONTEXT = 32  # `max_position_embeddings` of the Mistral checkpoint, for the `max_tokens` cap
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
# Qwen2's pre-tokenizer (`Qwen2Tokenizer`, transformers 5.23): a letter run keeps the space before it.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def word(token_id: int) -> str:
    """Token `token_id` as text: a space and two letters (`" aa"`, `" ab"`, ...)."""
    return " " + chr(ord("a") + token_id // 26) + chr(ord("a") + token_id % 26)


def text_of(token_ids: list[int]) -> str:
    return "".join(word(token_id) for token_id in token_ids)


def save_tokenizer(path: Path, vocab_size: int) -> None:
    """A byte-level BPE tokenizer whose token `i` is `word(i)`, built with the `tokenizers` library (nothing from the
    Hub), with a chat template that joins the messages' contents.

    Upstream loads the tokenizer of a Qwen2 / Qwen3 checkpoint as `Qwen2Tokenizer` whatever the files say, which
    rebuilds a byte-level BPE from the vocabulary and merges with its own pre-tokenizer: so this tokenizer is one, with
    that pre-tokenizer, and every class reads it alike. The letters and prefixes its merges need come after the model's
    vocabulary and are never produced for a text of whole tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    letters = [chr(ord("a") + k) for k in range(26)]
    vocab = {word(i).replace(" ", "Ġ"): i for i in range(vocab_size)}  # "Ġ": a space, byte-level
    for piece in ["Ġ", *letters, *(f"Ġ{letter}" for letter in letters)]:
        vocab.setdefault(piece, len(vocab))
    merges = [("Ġ", letter) for letter in letters]
    merges += [(word(i)[:2].replace(" ", "Ġ"), word(i)[2]) for i in range(vocab_size)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(path)


def saved_model(config: PreTrainedConfig) -> Callable[[Path], None]:
    """Writes a model of `config` with unit-scale random weights (distinct greedy tokens) by `save_pretrained`."""

    def write(path: Path) -> None:
        torch.manual_seed(0)
        randomize_weights(AutoModelForCausalLM.from_config(config)).save_pretrained(path)

    return write


def gpt_oss_config() -> PreTrainedConfig:
    """GPT-OSS with windows 4 (global: layers 0 and 3) and 3 (layer 2), full attention on layer 1, and per-layer
    experts and KV heads."""
    return GptOssConfig(
        **GPT_OSS_GLOBALS,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        per_layer_config={
            1: {"num_local_experts": 2, "num_experts_per_tok": 1},
            2: {"sliding_window": 3, "num_local_experts": 2},
            3: {"num_key_value_heads": 1},
        },
    )


@dataclass(frozen=True)
class Family:
    """A family's checkpoint writer (model only: the tokenizer is added), and the reason continuous batching refuses
    it with (`None`: served)."""

    write: Callable[[Path], object]
    refused_by_continuous_batching: str | None = None


UNPAGED_LAYER = r"continuous batching cannot serve a '(chunked_attention|linear_attention|moe)' layer"
FAMILIES = {
    # Skipped attention and MLP, KV heads 1, 2 and 4.
    "llama": Family(saved_model(TINY_MODELS["llama"].make_config("sdpa"))),
    # Windows 3 (global) and 5, full attention on layer 1, skips and KV heads as Llama.
    "mistral": Family(saved_model(TINY_MODELS["mistral"].make_config("sdpa"))),
    "qwen2": Family(saved_model(TINY_MODELS["qwen2"].make_config("sdpa"))),
    "qwen3": Family(saved_model(TINY_MODELS["qwen3"].make_config("sdpa"))),
    "gpt_oss": Family(saved_model(gpt_oss_config())),
    # Released formats: KV heads, no-op and linear attention and FFNs; experts and windows 4 and 8; Mamba and MoE.
    "nemotron-nas": Family(lambda path: checkpoints.write_nemotron_checkpoint(path, num_shards=1)),
    "gpt_oss_puzzle": Family(lambda path: gpt_oss_checkpoints.write_puzzle_checkpoint(path, num_shards=1)),
    "nemotron_h_puzzle": Family(nemotron_h_puzzle_checkpoint.write_puzzle_checkpoint, UNPAGED_LAYER),
    # Chunked attention per layer.
    "llama4_text": Family(saved_model(TINY_MODELS["llama4_text"].make_config("sdpa")), UNPAGED_LAYER),
}


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory) -> Path:
    """Every family's checkpoint with its tokenizer, plus a homogeneous Llama, and a Mistral and a homogeneous Llama of
    a short context."""
    folder = tmp_path_factory.mktemp("served")
    writers = {name: family.write for name, family in FAMILIES.items()}
    writers["homogeneous"] = saved_model(build_config(ARCHS["llama"], None, 2, "sdpa"))
    short = TINY_MODELS["mistral"].make_config("sdpa")
    short.max_position_embeddings = CONTEXT
    writers["short_context"] = saved_model(short)
    homogeneous_short = build_config(ARCHS["llama"], None, 2, "sdpa")
    homogeneous_short.max_position_embeddings = CONTEXT
    writers["homogeneous_short_context"] = saved_model(homogeneous_short)
    for name, write in writers.items():
        write(folder / name)
        save_tokenizer(folder / name, AutoConfig.from_pretrained(folder / name).vocab_size)
    return folder


def free_port() -> int:
    """A port that is free now; the server binds it a moment later (engineers run tests side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(port: int, continuous_batching: bool, *extra: str) -> list[str]:
    cli = shutil.which("transformers", path=os.path.dirname(sys.executable)) or "transformers"
    command = [cli, "serve", *extra, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    command += ["--dtype", "float32", "--log-level", "info"]
    if continuous_batching:
        command += ["--continuous-batching", "--cb-block-size", "8", "--cb-num-blocks", "64"]
        command += ["--cb-max-batch-tokens", "48"]
    return command


SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class Server:
    base_url: str
    log_path: Path
    continuous_batching: bool

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0
        )

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def started(command: list[str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`command` in a subprocess logging to `log_path`, killed on exit whatever happens (a test server has nothing to
    save, and a graceful shutdown takes seconds)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=SERVER_ENV)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=20)


def wait_until_healthy(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


@dataclass
class Processes:
    servers: dict[bool, Server]  # by `continuous_batching`
    preloaded: subprocess.Popen  # `transformers serve nemotron_h_puzzle --continuous-batching`
    preloaded_log: Path


@pytest.fixture(scope="module")
def processes(checkpoint_folder) -> Iterator[Processes]:
    """The two servers, with and without continuous batching, and a server asked to preload a model continuous
    batching cannot serve, all started at once (each takes seconds to import Transformers)."""
    ports = {mode: free_port() for mode in (True, False)}
    logs = {mode: checkpoint_folder / f"server-{mode}.log" for mode in (True, False)}
    preloaded_log = checkpoint_folder / "preloaded.log"
    preload_command = serve_command(free_port(), True, str(checkpoint_folder / "nemotron_h_puzzle"))
    with (
        started(serve_command(ports[True], True), logs[True]) as with_batching,
        started(serve_command(ports[False], False), logs[False]) as without_batching,
        started(preload_command, preloaded_log) as preloaded,
    ):
        servers = {}
        for mode, process in ((True, with_batching), (False, without_batching)):
            servers[mode] = Server(f"http://127.0.0.1:{ports[mode]}", logs[mode], mode)
            wait_until_healthy(process, servers[mode].base_url, logs[mode])
        yield Processes(servers, preloaded, preloaded_log)


@pytest.fixture(scope="module", params=[True, False], ids=["continuous_batching", "generate"])
def server(request, processes) -> Server:
    return processes.servers[request.param]


@pytest.fixture(scope="module")
def expected_tokens(checkpoint_folder) -> Callable[[str, str], list[int]]:
    """Greedy `generate` of a checkpoint (loaded here, once) on the ids its saved tokenizer gives a prompt text."""
    models = {}

    def expected(name: str, text: str) -> list[int]:
        if name not in models:
            path = checkpoint_folder / name
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            models[name] = (model, AutoProcessor.from_pretrained(path))
        model, tokenizer = models[name]
        inputs = tokenizer(text, return_tensors="pt")  # with its attention mask: the server attends to every token
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :].tolist()

    return expected


def prompt_texts(vocab_size: int) -> list[str]:
    generator = torch.Generator().manual_seed(5)
    return [
        text_of(torch.randint(0, vocab_size, (length,), generator=generator).tolist()) for length in PROMPT_LENGTHS
    ]


def complete(client: openai.OpenAI, checkpoint: Path, text: str, stream: bool, **fields) -> str:
    kwargs = {"model": str(checkpoint), "prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0.0, **fields}
    if not stream:
        return client.completions.create(**kwargs).choices[0].text
    return "".join(chunk.choices[0].text for chunk in client.completions.create(**kwargs, stream=True))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_concurrent_completions_equal_generate(server, checkpoint_folder, expected_tokens, family):
    checkpoint = checkpoint_folder / family
    refusal = FAMILIES[family].refused_by_continuous_batching
    client = server.client()
    if server.continuous_batching and refusal is not None:
        with pytest.raises(openai.UnprocessableEntityError, match=refusal):
            complete(client, checkpoint, text_of([1, 2]), stream=False)
        assert re.search(
            f"Model {re.escape(str(checkpoint))}@main cannot be served: Layer \\d+: {refusal}", server.log()
        )
        return
    tokenizer = AutoProcessor.from_pretrained(checkpoint)
    texts = prompt_texts(AutoConfig.from_pretrained(checkpoint).vocab_size)
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        futures = [pool.submit(complete, client, checkpoint, text, i % 2 == 0) for i, text in enumerate(texts)]
        served = [future.result(timeout=REQUEST_TIMEOUT_S) for future in futures]
    for text, served_text in zip(texts, served):
        tokens = tokenizer(served_text)["input_ids"]
        assert tokens == expected_tokens(family, text), f"prompt of {len(text.split())} tokens: {served_text!r}"
    assert f"CB: {server.continuous_batching}" in server.log()


def test_malformed_fields_get_a_client_error_naming_them(server, checkpoint_folder):
    client, checkpoint = server.client(), checkpoint_folder / "mistral"
    for field, value, message in (
        ("max_tokens", "lots", "`max_tokens` must be a positive integer; got 'lots'"),
        ("max_tokens", 0, "`max_tokens` must be a positive integer; got 0"),
        ("temperature", "hot", "`temperature` must be a number >= 0; got 'hot'"),
        ("seed", 1.5, "`seed` must be an integer; got 1.5"),
        ("frequency_penalty", -1, "`frequency_penalty` must be a number in (-1, 2]; got -1"),
        ("generation_config", "{not json", "`generation_config` must be a JSON object, as a string; got '{not json'"),
    ):
        with pytest.raises(openai.BadRequestError, match=re.escape(message)) as error:
            complete(client, checkpoint, text_of([1, 2]), stream=False, extra_body={field: value})
        assert error.value.body["param"] == field
    with pytest.raises(openai.BadRequestError, match="`max_completion_tokens` must be a positive integer"):
        client.chat.completions.create(
            model=str(checkpoint),
            messages=[{"role": "user", "content": text_of([1, 2])}],
            max_completion_tokens="many",
        )
    chat = client.chat.completions.create(
        model=str(checkpoint),
        messages=[{"role": "user", "content": text_of([1, 2])}],
        max_completion_tokens=2,
        temperature=0,
    )
    assert len(chat.choices[0].message.content.split()) == 2


def test_an_empty_prompt_is_refused_and_disturbs_no_other_request(server, checkpoint_folder, expected_tokens):
    """Before this, an empty prompt killed the continuous-batching worker: every later request got 503."""
    client, checkpoint = server.client(), checkpoint_folder / "mistral"
    text = prompt_texts(100)[3]
    with ThreadPoolExecutor(max_workers=3) as pool:
        others = [pool.submit(complete, client, checkpoint, text, stream) for stream in (False, True)]
        with pytest.raises(openai.BadRequestError, match="The prompt is empty"):
            complete(client, checkpoint, "", stream=False)
        served = [future.result(timeout=REQUEST_TIMEOUT_S) for future in others]
    tokenizer = AutoProcessor.from_pretrained(checkpoint)
    assert [tokenizer(s)["input_ids"] for s in served] == [expected_tokens("mistral", text)] * 2
    assert complete(client, checkpoint, text, stream=False) == served[0]


def test_max_tokens_is_capped_by_the_context_and_the_response_says_so(server, checkpoint_folder):
    client, checkpoint = server.client(), checkpoint_folder / "short_context"
    raw = client.completions.with_raw_response.create(
        model=str(checkpoint), prompt=text_of([1, 2, 3]), max_tokens=1_000_000_000, temperature=0
    )
    completion = raw.parse()
    room = CONTEXT - 3
    assert completion.usage.completion_tokens == room and completion.choices[0].finish_reason == "length"
    assert raw.headers["x-max-tokens-capped"] == (
        f"{room} (max_tokens=1000000000 lowered: the model's context holds {CONTEXT} tokens and the prompt has 3)"
    )
    streamed = client.completions.with_raw_response.create(
        model=str(checkpoint), prompt=text_of([1, 2, 3]), max_tokens=1_000_000_000, temperature=0, stream=True
    )
    assert streamed.headers["x-max-tokens-capped"].startswith(f"{room} ")
    assert len("".join(chunk.choices[0].text for chunk in streamed.parse()).split()) == room
    with pytest.raises(openai.BadRequestError, match=f"The prompt has {CONTEXT} tokens; the model's context holds"):
        complete(client, checkpoint, text_of([1] * CONTEXT), stream=False)
    uncapped = client.completions.with_raw_response.create(
        model=str(checkpoint), prompt=text_of([1, 2, 3]), max_tokens=2, temperature=0
    )
    assert "x-max-tokens-capped" not in uncapped.headers


@pytest.mark.overlay_only
def test_homogeneous_models_keep_upstreams_answers(server, checkpoint_folder):
    """The overlay's fixes apply to heterogeneous models only: for a homogeneous one, `max_tokens: "lots"` gets
    upstream's answer (5.23: `int("lots")` raises in the handler, a 500), as before; the generic fix is upstream's
    (the upstream series, `test_homogeneous_models_get_the_generic_fixes`)."""
    with pytest.raises(openai.InternalServerError):
        complete(server.client(), checkpoint_folder / "homogeneous", text_of([1, 2]), stream=False, max_tokens="lots")
    with pytest.raises(openai.BadRequestError, match="`max_tokens` must be a positive integer"):
        complete(server.client(), checkpoint_folder / "llama", text_of([1, 2]), stream=False, max_tokens="lots")


@pytest.mark.upstream_only
def test_homogeneous_models_get_the_generic_fixes(server, checkpoint_folder):
    """On the patched tree the server's fixes are upstream's, for every model: a malformed field and an empty prompt
    get a 400 naming them, and `max_tokens` is capped by the model's context (5.23: a 500, a dead worker or a 500,
    and a request that runs until the client gives up)."""
    client, checkpoint = server.client(), checkpoint_folder / "homogeneous"
    with pytest.raises(openai.BadRequestError, match="`max_tokens` must be a positive integer; got 'lots'"):
        complete(client, checkpoint, text_of([1, 2]), stream=False, max_tokens="lots")
    with pytest.raises(openai.BadRequestError, match="The prompt is empty"):
        complete(client, checkpoint, "", stream=False)
    raw = client.completions.with_raw_response.create(
        model=str(checkpoint_folder / "homogeneous_short_context"), prompt=text_of([1, 2, 3]), max_tokens=10**9,
        temperature=0,
    )  # fmt: skip
    assert raw.headers["x-max-tokens-capped"] == (
        f"{CONTEXT - 3} (max_tokens=1000000000 lowered: the model's context holds {CONTEXT} tokens and the prompt has 3)"
    )


def test_a_preloaded_model_continuous_batching_cannot_serve_stops_the_server(processes, checkpoint_folder):
    """`transformers serve MODEL --continuous-batching` loads MODEL at start-up: it stops with the reason."""
    assert processes.preloaded.wait(timeout=START_TIMEOUT_S) == 1, processes.preloaded_log.read_text()[-3000:]
    checkpoint = checkpoint_folder / "nemotron_h_puzzle"
    log = processes.preloaded_log.read_text()
    assert re.search(f"transformers serve: Model {re.escape(str(checkpoint))}@main cannot be served: Layer \\d+: "
                     f"{UNPAGED_LAYER}", log), log[-3000:]  # fmt: skip


def test_max_request_tokens_is_the_arithmetic_of_the_groups():
    """The paged cache of `test_admission_needs_room_in_every_group` (20 sectors of 2048 bytes, pages of 4 tokens):
    one request holds 2 sectors of window 6 (2 blocks, 1 a sector), 1 of window 3 (1 block, 2 a sector) and 1 of
    window 10 (3 blocks, 4 a sector) whatever its length; the 16 sectors left hold 16 * 4 blocks of 4 tokens of full
    attention: 256 tokens."""
    from .test_continuous_batching import SEVERAL_WINDOWS, WINDOW, served_cache

    model = build_model(ARCHS["mistral"], SEVERAL_WINDOWS, 5, sliding_window=WINDOW)
    cache = served_cache(model, num_blocks=20 * 2048 // 4096)
    assert cache.num_sectors == 20
    assert max_request_tokens(cache) == 256
    without_full = build_model(ARCHS["mistral"], {1: {"sliding_window": 3}}, 2, sliding_window=WINDOW)
    assert max_request_tokens(served_cache(without_full)) is None
