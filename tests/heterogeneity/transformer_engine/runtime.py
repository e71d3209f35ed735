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
"""Which TransformerEngine the tests run: the real one where CUDA exists, else TE's Python code over the stand-in."""

from __future__ import annotations

import contextlib
import importlib
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .emulation import te_cpu_emulation
from .gpu_environment import TF32_SWITCH


def import_transformer_engine() -> types.ModuleType:
    """Returns `transformer_engine.pytorch`: real TE when CUDA is available, else imported under the CPU emulation.

    With CUDA the stand-in is never installed, so the same tests run unchanged against real TE on a GPU.
    """
    if torch.cuda.is_available():
        if os.environ.get(TF32_SWITCH) != "0":
            raise RuntimeError(
                f"CUDA is available, so the TE tests run real TransformerEngine and compare fp32 results within 1e-5; "
                f"with {TF32_SWITCH}={os.environ.get(TF32_SWITCH)!r} cuBLAS may run fp32 GEMMs in TF32. Run them with "
                f"`make gpu-check` (which sets {TF32_SWITCH}=0 and checks TE's install), or set it yourself."
            )
        try:
            return importlib.import_module("transformer_engine.pytorch")
        except (ImportError, RuntimeError, FileNotFoundError) as error:
            # `make install` brings only TE's pure-Python wheel; real TE also needs its CUDA core and extension.
            raise RuntimeError(
                f"CUDA is available, so the TE tests run real TransformerEngine, which failed to import ({error}). "
                "`make gpu-check` installs it (or see the message of `python -m "
                "tests.heterogeneity.transformer_engine.gpu_environment`), or hide the GPU (`CUDA_VISIBLE_DEVICES=`) "
                "to run TE's Python code over the CPU emulation instead."
            ) from error
    with te_cpu_emulation() as te:
        return te


@dataclass(frozen=True)
class TERuntime:
    """The TE a test runs, and how to run it.

    Attributes:
        te: The `transformer_engine.pytorch` module.
        emulated: True when TE's Python code runs on the CPU over the stand-in extension.
        device: Where tensors for TE (and the stock references compared against it) live: `cpu` or `cuda`.
    """

    te: types.ModuleType
    emulated: bool
    device: torch.device

    @contextlib.contextmanager
    def active(self) -> Iterator[types.ModuleType]:
        """Wrap every call that runs TE code (construction, forward, backward, generate) in this.

        Under the emulation it opens `te_cpu_emulation()` (re-entrant); with real TE it does nothing.
        """
        if not self.emulated:
            yield self.te
            return
        with te_cpu_emulation() as te:
            yield te


def load_te_runtime() -> TERuntime:
    """The `TERuntime` for this machine (see `import_transformer_engine`)."""
    emulated = not torch.cuda.is_available()
    return TERuntime(
        te=import_transformer_engine(),
        emulated=emulated,
        device=torch.device("cpu" if emulated else "cuda"),
    )
