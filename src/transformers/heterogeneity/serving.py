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
"""`transformers serve` for heterogeneous models: what the server cannot do is refused with a client error that says
why, never an HTTP 500, a hung request or a dead server.

Upstream's server (transformers 5.23, `cli/serving/`) has these faults, for homogeneous models as well:

- a checkpoint whose `architectures` entry is not a top-level `transformers` class (the checkpoint families registered
  with the Auto classes, as remote-code models) fails to load: `getattr(transformers, ...)` in
  `ModelManager._load_model`, an `AttributeError` and a 500;
- with `--continuous-batching`, a model continuous batching cannot page loads, then fails every request (500, or 503
  once its worker died);
- a malformed field (`max_tokens: "lots"`, `temperature: "hot"`, `seed: "x"`) raises in `int()` / `float()`: 500;
- an empty prompt kills the continuous-batching worker (every later request gets 503) or raises in `generate` (500);
- `max_tokens: 1000000000` makes `generate` run until the client gives up while it holds the model's inference
  thread (every later request waits), and with continuous batching grows the request past the cache: "No requests can
  be scheduled and no requests can be offloaded" kills the worker.

Each fix is a function here. `activation.py` applies them to the models this package builds per layer
(`applies_to`); homogeneous models keep upstream's behaviour. None of them is specific to heterogeneous models:
they belong in upstream's server for every model.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from ..configuration_utils import PreTrainedConfig
from ..utils import logging
from .supported_models import get_config_spec


logger = logging.get_logger(__name__)

__all__ = [
    "MAX_TOKENS_CAPPED_HEADER",
    "ResponseNotesMiddleware",
    "ServingRequestError",
    "ServingState",
    "UnservableModelError",
    "applies_to",
    "architecture_class",
    "cap_generation",
    "check_request_fields",
    "continuous_batching_cache",
    "continuous_batching_refusal",
    "max_request_tokens",
    "response_notes",
    "serving_request_error_response",
]

# The response header that says `max_tokens` was lowered, and to what.
MAX_TOKENS_CAPPED_HEADER = "x-max-tokens-capped"
# Status codes: a request field or prompt the server cannot take, and a model the server will not serve as configured.
BAD_REQUEST, UNSERVABLE_MODEL = 400, 422
# How long the first request of a continuous-batching model waits for the worker to build its paged cache.
CACHE_READY_TIMEOUT_S = 600


class UnservableModelError(ValueError):
    """A model this server will not serve as it is configured (the message says why and what to do)."""


class ServingRequestError(Exception):
    """A request the server cannot take: answered with `status_code` and an OpenAI-style error body naming the
    request field at fault (`param`), which OpenAI clients show (`openai.BadRequestError: Error code: 400 - ...`)."""

    def __init__(self, status_code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": None}}


def applies_to(config: PreTrainedConfig) -> bool:
    """Whether the fixes of this module apply: a model this package builds per layer (a heterogeneous config of a
    supported architecture). Homogeneous models and those that read `per_layer_config` natively keep upstream's
    server."""
    config = config.get_text_config()
    return config.is_heterogeneous and get_config_spec(config) is not None


def architecture_class(name: str, transformers: Any) -> Any:
    """What `getattr(transformers, name)` resolves a checkpoint's `architectures` entry to, for the model manager:
    upstream's class, or for the model classes of the checkpoint families registered by this package (not top-level
    `transformers` names; nemotron-nas and deci even share `DeciLMForCausalLM`) the Auto class that builds them, which
    picks the family's class from the config.

    Raises:
        AttributeError: as upstream, for any other name.
    """
    try:
        return getattr(transformers, name)
    except AttributeError:
        from .checkpoint_formats import CHECKPOINT_FORMATS

        for checkpoint_format in CHECKPOINT_FORMATS.values():
            for auto_name, model_name in checkpoint_format.models.items():
                if model_name == name:
                    return getattr(transformers, auto_name)
        raise


def continuous_batching_refusal(config: PreTrainedConfig) -> str | None:
    """Why continuous batching cannot serve a model of `config`, from the config alone, or `None` when it can."""
    from .continuous_batching import continuous_batching_refusal as refusal

    reason = refusal(config)
    if reason is None:
        return None
    return (
        f"{reason} This server runs with --continuous-batching; start one without it to serve this model with "
        "`generate()`."
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON `true` is a Python int


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_json_object(value: Any) -> bool:
    try:
        return isinstance(value, str) and isinstance(json.loads(value), dict)
    except ValueError:
        return False


# The fields the handlers convert (transformers 5.23, `cli/serving/*.py`), with the check each value must pass and
# what it must be. `frequency_penalty` becomes `repetition_penalty = 1 + frequency_penalty`, which must be positive.
_FIELD_CHECKS = {
    "max_tokens": (lambda value: _is_integer(value) and value >= 1, "a positive integer"),
    "max_completion_tokens": (lambda value: _is_integer(value) and value >= 1, "a positive integer"),
    "max_output_tokens": (lambda value: _is_integer(value) and value >= 1, "a positive integer"),
    "temperature": (lambda value: _is_number(value) and value >= 0, "a number >= 0"),
    "top_p": (lambda value: _is_number(value) and 0 < value <= 1, "a number in (0, 1]"),
    "frequency_penalty": (lambda value: _is_number(value) and -1 < value <= 2, "a number in (-1, 2]"),
    "seed": (_is_integer, "an integer"),
    "stream": (lambda value: isinstance(value, bool), "true or false"),
    "stop": (
        lambda value: isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
        "a string or a list of strings",
    ),
    "generation_config": (_is_json_object, "a JSON object, as a string"),
}


def check_request_fields(body: Mapping[str, Any]) -> None:
    """Checks the fields the handlers convert (`int(body["max_tokens"])`, `float(body["temperature"])`, ...).

    Raises:
        ServingRequestError: 400 naming the first malformed field, what it must be and what it is.
    """
    for name, (is_valid, expected) in _FIELD_CHECKS.items():
        value = body.get(name)
        if value is not None and not is_valid(value):
            raise ServingRequestError(BAD_REQUEST, f"`{name}` must be {expected}; got {value!r}.", param=name)


_notes: ContextVar[dict[str, str] | None] = ContextVar("serving_response_notes", default=None)


@contextlib.contextmanager
def response_notes() -> Iterator[dict[str, str]]:
    """Collects, for one request, the response headers that tell the client what the server changed in its request
    (`cap_generation`); the caller adds them to the response."""
    notes: dict[str, str] = {}
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


def max_request_tokens(cache: Any) -> int | None:
    """The most tokens one request can hold in an empty paged cache (`PagedAttentionCache`: its groups share
    `num_sectors` sectors; a windowed group holds at most its window), or `None` when no group grows without bound."""
    allocators = list(cache.cache_allocators.values())
    if all(getattr(allocator, "sliding_window", None) is not None for allocator in allocators):
        return None

    def sectors(tokens: int) -> int:
        total = 0
        for allocator in allocators:
            window = getattr(allocator, "sliding_window", None)
            kept = tokens if window is None else min(tokens, window)
            blocks = -(-kept // allocator.tokens_per_page)
            total += -(-blocks // allocator.blocks_per_sector)
        return total

    low, high = 0, cache.num_sectors * max(a.blocks_per_sector * a.tokens_per_page for a in allocators)
    while low < high:  # the largest token count whose sectors fit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if sectors(middle) <= cache.num_sectors else (low, middle - 1)
    return low


def continuous_batching_cache(manager: Any, timeout: float = CACHE_READY_TIMEOUT_S) -> Any:
    """The paged cache of a started `ContinuousBatchingManager`, which its worker thread builds when it starts; waits
    for it (the first request of a model only). `None` without a manager, or if the worker died first (requests then
    get upstream's 503)."""
    if manager is None:
        return None
    deadline = time.monotonic() + timeout
    while manager.batch_processor is None and manager.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    return None if manager.batch_processor is None else manager.batch_processor.cache


def cap_generation(config: PreTrainedConfig, input_ids: Any, generation_config: Any, cache: Any = None) -> None:
    """Refuses an empty prompt or one longer than the model takes, and lowers `generation_config.max_new_tokens` to
    what the model's context (`max_position_embeddings`) and, with continuous batching, the paged `cache` hold for one
    request; a lowered value is noted in the response (`MAX_TOKENS_CAPPED_HEADER`) and logged.

    Raises:
        ServingRequestError: 400 for an empty prompt, or one that leaves no room to generate.
    """
    prompt_length = _length(input_ids)
    if prompt_length == 0:
        raise ServingRequestError(
            BAD_REQUEST, "The prompt is empty: there is nothing to continue. Send at least one token.", param="prompt"
        )
    limits = {}
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context is not None:
        limits["the model's context"] = context
    cache_tokens = None if cache is None else max_request_tokens(cache)
    if cache_tokens is not None:
        limits["the paged cache"] = cache_tokens
    if not limits:
        return
    limit_name, limit = min(limits.items(), key=lambda item: item[1])
    room = limit - prompt_length
    if room < 1:
        raise ServingRequestError(
            BAD_REQUEST,
            f"The prompt has {prompt_length} tokens; {limit_name} holds {limit}, which leaves no room to generate.",
            param="prompt",
        )
    requested = generation_config.max_new_tokens
    if requested is not None and requested > room:
        generation_config.max_new_tokens = room
        message = (
            f"{room} (max_tokens={requested} lowered: {limit_name} holds {limit} tokens and the prompt has "
            f"{prompt_length})"
        )
        logger.warning(f"Request capped to {message}.")
        notes = _notes.get()
        if notes is not None:
            notes[MAX_TOKENS_CAPPED_HEADER] = message


def _length(input_ids: Any) -> int:
    """Tokens of one prompt: a list (continuous batching) or a `[1, length]` tensor (`generate`)."""
    shape = getattr(input_ids, "shape", None)
    return int(shape[-1]) if shape is not None else len(input_ids)


class ServingState:
    """What the patched `ModelManager` of one server remembers: whether it serves with continuous batching, and the
    models it refused (so that a refused checkpoint is not loaded again for every request naming it)."""

    def __init__(self, continuous_batching: bool) -> None:
        self.continuous_batching = continuous_batching
        self.refused: dict[str, str] = {}
        self._lock = threading.Lock()

    def check_not_refused(self, model_key: str) -> None:
        """Raises: UnservableModelError: `model_key` was refused before."""
        with self._lock:
            reason = self.refused.get(model_key)
        if reason is not None:
            raise UnservableModelError(reason)

    def refuse_if_unservable(self, model_key: str, model: Any, unload: Any) -> None:
        """Refuses a model just loaded that this server cannot serve: logs why, unloads it (`unload()`), remembers it.

        Raises:
            UnservableModelError: naming the model and the reason.
        """
        if not self.continuous_batching or not applies_to(model.config):
            return
        reason = continuous_batching_refusal(model.config)
        if reason is None:
            return
        message = f"Model {model_key} cannot be served: {reason}"
        logger.error(message)
        unload()
        with self._lock:
            self.refused[model_key] = message
        raise UnservableModelError(message)


async def serving_request_error_response(request: Any, error: ServingRequestError) -> Any:
    """The FastAPI exception handler of `ServingRequestError`."""
    from fastapi.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status_code)


class ResponseNotesMiddleware:
    """ASGI middleware that adds the notes `cap_generation` recorded for a request to its response headers (for a
    streamed response too: the notes are recorded before its first byte)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with response_notes() as notes:

            async def send_with_notes(message: dict) -> None:
                if message["type"] == "http.response.start" and notes:
                    added = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in notes.items()]
                    message = {**message, "headers": [*message.get("headers", []), *added]}
                await send(message)

            await self.app(scope, receive, send_with_notes)
