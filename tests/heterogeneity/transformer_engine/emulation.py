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
"""The scoped CPU emulation under which TransformerEngine 2.20.2's real Python code runs on a CPU-only torch.

`te_cpu_emulation()` is a context manager. While it is open:
- `torch.cuda.is_available()` is True, `current_device()` 0, `device_count()` 1, `get_device_properties()` /
  `get_device_capability()` describe a compute-capability 8.0 device, `is_current_stream_capturing()` False, and
  `synchronize()` a no-op (TE refuses to build modules without CUDA and reads the capability to pick kernels);
- a `TorchFunctionMode` maps `device="cuda"` / `"cuda:N"` / integer devices to the CPU in every torch call, and in
  `Tensor.to` (and in `torch.range`, which bypasses such modes); `Tensor.cuda()` returns the tensor;
  `Tensor.is_cuda` is True (TE rejects inputs that are not); backward passes run under the same mapping (the
  autograd engine is started inside it), so TE's backward functions and checkpointing recomputation see it too;
- TE's five `torch.library.custom_op(..., device_types="cuda")` ops (`attention/custom_ops.py`: the KV-cache copy,
  bshd/thd conversions, FlashAttention QKV packing) get CPU kernels, registered through a `torch.library.Library`
  that is destroyed on exit.
Everything is restored in `finally`. Not thread-safe (it patches process-wide attributes); nested entries are no-ops.

The first entry imports TE (`transformer_engine.pytorch`) with `extension.py` registered as `transformer_engine_torch`,
without loading `libtransformer_engine.so`, cuDNN, NVRTC or cuRAND: `NVTE_PROJECT_BUILDING=1` during the import makes
`transformer_engine/common/__init__.py` skip them, and `load_framework_extension` is replaced by a check that the
stand-in is the registered extension. `NVTE_TORCH_COMPILE=0` keeps TE's JIT fusions from calling `torch.compile`
under the patched CUDA checks. The `triton` of `triton_standin.py` is in `sys.modules` only during TE's import (its
`distributed.py` imports TE's Triton kernel modules), after `torch._dynamo` (which probes for Triton at its own
import), and only where no real Triton is installed. The import is
permanent for the process, as any import is: TE's modules, and the stand-in under `transformer_engine_torch`, stay
in `sys.modules`; nothing else does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from . import attention_kernels, extension, triton_standin


TE_VERSION = "2.20.2"
TE_DISTRIBUTION = "transformer-engine"
EXTENSION_MODULE = "transformer_engine_torch"
# Compute capability the emulated device reports: Ampere (sm80), where TE enables bf16 and its unfused attention
# without FP8 (FP8 needs 8.9+).
COMPUTE_CAPABILITY = (8, 0)

_depth = 0


class TEVersionError(RuntimeError):
    """The installed TransformerEngine is not the version the stand-in extension was written against."""


# Where `make install` puts TE's pure-Python wheel (`pip install --no-deps --target`): outside site-packages, because
# a findable `transformer_engine` without its compiled core raises at import, and PEFT (imported by
# `transformers.Trainer`) imports it whenever it can find it (`peft/import_utils.py`, `is_te_pytorch_available`). Only
# the emulation's own import of TE sees this directory; once imported, TE is a working module for everyone.
TE_CPU_DIR = Path(sys.prefix) / "te-cpu"


def installed_te_version() -> str | None:
    """The version of the installed `transformer-engine` wheel (in site-packages or `TE_CPU_DIR`), or None."""
    try:
        return importlib.metadata.version(TE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    for distribution in importlib.metadata.distributions(name=TE_DISTRIBUTION, path=[str(TE_CPU_DIR)]):
        return distribution.version
    return None


def check_te_version() -> None:
    """Refuses any TE but 2.20.2: the stand-in's names and signatures are those of that release."""
    found = installed_te_version()
    if found != TE_VERSION:
        raise TEVersionError(
            f"the CPU emulation of TransformerEngine is written against transformer-engine=={TE_VERSION}, found "
            f"{found or 'none'}. Install it with `pip install --no-deps --target {TE_CPU_DIR} transformer-engine=={TE_VERSION}` (see "
            "tests/heterogeneity/transformer_engine/README.md), or update the stand-in for the new version."
        )


@dataclass(frozen=True)
class _DeviceProperties:
    """What TE reads from `torch.cuda.get_device_properties`."""

    name: str = "CPU emulation of a CUDA device"
    major: int = COMPUTE_CAPABILITY[0]
    minor: int = COMPUTE_CAPABILITY[1]
    total_memory: int = 80 * 2**30
    multi_processor_count: int = 108


def _cpu_device(device: Any) -> Any:
    """`device` with CUDA (or a bare device index, which torch reads as CUDA) replaced by the CPU."""
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, str):
        return "cpu" if device.startswith("cuda") else device
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu"
    return device


class _CudaOnCpu(TorchFunctionMode):
    """Sends every torch call that names a CUDA device to the CPU instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        if func is torch.Tensor.to:  # the one call that takes a device positionally: `t.to(0)`, `t.to("cuda")`
            args = tuple(_cpu_device(arg) if not isinstance(arg, torch.Tensor) else arg for arg in args)
        return func(*args, **kwargs)


def _backward_with_cuda_on_cpu(run_backward: Any) -> Any:
    """Runs the autograd engine with the device mapping on.

    A torch-function mode is off while it handles a call, and `Tensor.backward` / `torch.autograd.backward` / `grad`
    are such calls: without this, TE's backward functions, and TE's forward where activation checkpointing recomputes
    it, would run unmapped. `torch.autograd._engine_run_backward` (torch 2.13, the pinned version) is where those
    entry points start the engine, which runs CPU graphs on the calling thread, under the mode pushed here.
    """

    def run(*args: object, **kwargs: object) -> Any:
        with _CudaOnCpu():
            return run_backward(*args, **kwargs)

    return run


def _range_on_cpu(original: Any) -> Any:
    """`torch.range` bypasses torch-function modes; TE 2.20.2's `InferenceParams` calls it with a CUDA device."""

    def range_(*args: object, **kwargs: object) -> torch.Tensor:
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.range is deprecated", category=UserWarning)
            return original(*args, **kwargs)

    return range_


def _cuda_noop(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return self


def _setattr(stack: contextlib.ExitStack, owner: Any, name: str, value: Any) -> None:
    """Sets `owner.name` and registers its restoration (deleting it again where it did not exist)."""
    missing = object()
    previous = owner.__dict__.get(name, missing) if isinstance(owner, type) else getattr(owner, name, missing)
    setattr(owner, name, value)
    if previous is missing:
        stack.callback(delattr, owner, name)
    else:
        stack.callback(setattr, owner, name, previous)


def _setenv(stack: contextlib.ExitStack, name: str, value: str) -> None:
    previous = os.environ.get(name)
    os.environ[name] = value
    stack.callback(lambda: os.environ.pop(name) if previous is None else os.environ.__setitem__(name, previous))


def _patch_cuda_runtime(stack: contextlib.ExitStack) -> None:
    """The `torch.cuda` queries and `Tensor` attributes TE's Python code checks before and while it runs."""
    properties = _DeviceProperties()
    _setattr(stack, torch.cuda, "is_available", lambda: True)
    _setattr(stack, torch.cuda, "current_device", lambda: 0)
    _setattr(stack, torch.cuda, "device_count", lambda: 1)
    _setattr(stack, torch.cuda, "get_device_properties", lambda device=None: properties)
    _setattr(stack, torch.cuda, "get_device_capability", lambda device=None: COMPUTE_CAPABILITY)
    _setattr(stack, torch.cuda, "is_current_stream_capturing", lambda: False)
    _setattr(stack, torch.cuda, "synchronize", lambda device=None: None)
    _setattr(stack, torch, "range", _range_on_cpu(torch.range))
    _setattr(stack, torch.Tensor, "cuda", _cuda_noop)
    _setattr(stack, torch.Tensor, "is_cuda", property(lambda self: True))
    _setenv(stack, "NVTE_TORCH_COMPILE", "0")
    if not hasattr(torch.autograd, "_engine_run_backward"):
        raise RuntimeError(
            f"torch {torch.__version__} has no torch.autograd._engine_run_backward, which the CPU emulation wraps so "
            "that backward passes run under its device mapping (written against torch 2.13)"
        )
    _setattr(
        stack, torch.autograd, "_engine_run_backward", _backward_with_cuda_on_cpu(torch.autograd._engine_run_backward)
    )
    stack.enter_context(_CudaOnCpu())


# TE 2.20.2's `attention/custom_ops.py`: the ops registered with `device_types="cuda"`, and the CPU kernel of each.
_CUSTOM_OP_KERNELS = {
    ("te_kv_cache", "copy_to_kv_cache"): attention_kernels.copy_to_kv_cache,
    ("te_kv_cache", "convert_bshd_to_thd"): attention_kernels.convert_bshd_to_thd,
    ("te_kv_cache", "convert_thd_to_bshd"): attention_kernels.convert_thd_to_bshd,
    ("te_attention", "fa_prepare_fwd"): attention_kernels.fa_prepare_fwd,
    ("te_attention", "fa_prepare_bwd"): attention_kernels.fa_prepare_bwd,
}


def _register_custom_op_kernels(stack: contextlib.ExitStack) -> None:
    """CPU kernels for TE's CUDA-only custom ops, registered for the scope of the emulation."""
    libraries: dict[str, torch.library.Library] = {}
    for (namespace, name), kernel in _CUSTOM_OP_KERNELS.items():
        if namespace not in libraries:
            libraries[namespace] = torch.library.Library(namespace, "IMPL")
            stack.callback(libraries[namespace]._destroy)
        libraries[namespace].impl(name, kernel, "CPU")


def _load_framework_extension(framework: str) -> None:
    """Stands in for `transformer_engine.common.load_framework_extension`: the extension is already registered."""
    if framework != "torch" or sys.modules.get(EXTENSION_MODULE) is not extension:
        raise RuntimeError(f"the CPU emulation provides only the torch extension (asked for {framework!r})")


class _ExtensionLoaderHook(importlib.abc.MetaPathFinder):
    """Replaces `transformer_engine.common.load_framework_extension` as soon as that module has executed.

    TE's top-level `__init__` imports `transformer_engine.common` and then at once tries `transformer_engine.pytorch`,
    whose first statement calls `load_framework_extension("torch")`; the replacement must be in place before that.
    The original is kept and put back after the import.
    """

    def __init__(self) -> None:
        self.original: Any = None

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "transformer_engine.common":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            execute(module)
            self.original = module.load_framework_extension
            module.load_framework_extension = _load_framework_extension

        spec.loader.exec_module = exec_module
        return spec

    def restore(self) -> None:
        common = sys.modules.get("transformer_engine.common")
        if common is not None and self.original is not None:
            common.load_framework_extension = self.original


@contextlib.contextmanager
def _importing_te() -> Iterator[None]:
    """What the import of TE needs beyond the runtime patches: no native libraries, the stand-ins registered."""
    import torch._dynamo  # noqa: F401  (before the Triton stand-in: dynamo probes for Triton at its import)

    if "transformer_engine" in sys.modules:
        raise RuntimeError(
            "transformer_engine was imported before the CPU emulation; import it through "
            "`import_transformer_engine()` or `te_cpu_emulation()` so that it binds the stand-in extension"
        )
    with contextlib.ExitStack() as stack:
        if TE_CPU_DIR.is_dir() and str(TE_CPU_DIR) not in sys.path:
            sys.path.append(str(TE_CPU_DIR))
            stack.callback(sys.path.remove, str(TE_CPU_DIR))
        _setenv(stack, "NVTE_PROJECT_BUILDING", "1")
        sys.modules[EXTENSION_MODULE] = extension
        standins = {name: module for name, module in triton_standin.build_modules().items() if name not in sys.modules}
        sys.modules.update(standins)
        stack.callback(lambda: [sys.modules.pop(name, None) for name in standins])
        hook = _ExtensionLoaderHook()
        sys.meta_path.insert(0, hook)
        stack.callback(hook.restore)
        stack.callback(sys.meta_path.remove, hook)
        yield


def _import_te() -> types.ModuleType:
    """Imports `transformer_engine.pytorch` over the stand-in extension (once per process)."""
    check_te_version()
    registered = sys.modules.get(EXTENSION_MODULE)
    if registered is not None and registered is not extension:
        raise RuntimeError(
            f"the real {EXTENSION_MODULE} is already imported in this process; the CPU emulation cannot replace it"
        )
    if "transformer_engine.pytorch" in sys.modules:
        return sys.modules["transformer_engine.pytorch"]
    with _importing_te():
        # TE's top-level `__init__` swallows ImportError; importing the subpackage explicitly surfaces real errors.
        return importlib.import_module("transformer_engine.pytorch")


@contextlib.contextmanager
def te_cpu_emulation() -> Iterator[types.ModuleType]:
    """Runs TransformerEngine 2.20.2's Python code on the CPU for the duration of the block.

    Yields:
        The `transformer_engine.pytorch` module, imported over the pure-PyTorch stand-in extension.

    Raises:
        TEVersionError: The installed `transformer-engine` is not 2.20.2.
        RuntimeError: Real CUDA or the real compiled extension is present (use real TE there instead).
    """
    global _depth
    if _depth:
        _depth += 1
        try:
            yield sys.modules["transformer_engine.pytorch"]
        finally:
            _depth -= 1
        return
    if torch.cuda.is_available():
        raise RuntimeError(
            "CUDA is available: run real TransformerEngine (tests use `import_transformer_engine()`), not the CPU "
            "emulation"
        )
    with contextlib.ExitStack() as stack:
        _patch_cuda_runtime(stack)
        te = _import_te()
        _register_custom_op_kernels(stack)
        _depth = 1
        stack.callback(_reset_depth)
        yield te


def _reset_depth() -> None:
    global _depth
    _depth = 0
