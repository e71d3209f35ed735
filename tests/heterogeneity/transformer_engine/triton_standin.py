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
"""A `triton` that lets TE 2.20.2's Triton kernel modules be imported on a machine without Triton, and runs nothing.

`transformer_engine/pytorch/distributed.py` imports TE's Triton kernels (padding, permutation, mHC, cross entropy)
at import time, and those modules decorate kernels with `triton.jit` / `triton.autotune` and annotate arguments with
`tl.constexpr`. The emulation puts these modules into `sys.modules` only while TE is being imported. Decorating works;
launching a kernel, or calling anything else, raises `EmulationUnsupportedError`: none of these kernels is on the
Llama path, and a CPU cannot run them.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NoReturn

from .kernels import EmulationUnsupportedError


# Below 3.5.0, TE's `common/triton/permutation.py` skips `triton.constexpr_function` (which a stand-in cannot run).
VERSION = "3.4.0"


def _unavailable(name: str) -> NoReturn:
    raise EmulationUnsupportedError(f"{name}: Triton kernels cannot run in the CPU emulation of TransformerEngine")


class _Placeholder:
    """A `triton.language` name used in annotations and defaults at import time; using it raises."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        _unavailable(self._name)

    def __repr__(self) -> str:
        return f"<triton stand-in {self._name}>"


class _Kernel:
    """What `@triton.jit` / `@triton.autotune` return: it keeps the function and refuses to launch."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getitem__(self, grid: object) -> Callable[..., NoReturn]:
        return self

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        _unavailable(f"triton kernel {self.__name__}")


def _jit(fn: Callable[..., Any] | None = None, **kwargs: object) -> Any:
    if fn is None:
        return _Kernel
    return _Kernel(fn)


def _decorator_factory(*args: object, **kwargs: object) -> Callable[[Callable[..., Any]], _Kernel]:
    return _Kernel


class _Config:
    """`triton.Config(kwargs, num_warps=..., ...)`: only stored, since autotuning never runs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args
        self.kwargs = kwargs


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)

    def placeholder(attr: str) -> _Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{name}.{attr}")

    module.__getattr__ = placeholder
    return module


def build_modules() -> dict[str, types.ModuleType]:
    """The `triton`, `triton.language` (+ `core`, `standard`) and `triton.runtime` modules, keyed by import name."""
    core = _module("triton.language.core")
    standard = _module("triton.language.standard")
    language = _module("triton.language", core=core, standard=standard)
    runtime = _module("triton.runtime")
    triton = _module(
        "triton",
        __version__=VERSION,
        language=language,
        runtime=runtime,
        jit=_jit,
        autotune=_decorator_factory,
        heuristics=_decorator_factory,
        Config=_Config,
        cdiv=_cdiv,
        next_power_of_2=_next_power_of_2,
    )
    return {
        "triton": triton,
        "triton.language": language,
        "triton.language.core": core,
        "triton.language.standard": standard,
        "triton.runtime": runtime,
    }
