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
"""Test infrastructure that runs TransformerEngine 2.20.2's real Python code on a CPU-only machine.

TE's modules (`TransformerLayer`, `MultiheadAttention`, `LayerNormMLP`, `LayerNormLinear`, `Linear`,
`DotProductAttention`, `InferenceParams`, its rope) are pure Python over a compiled extension,
`transformer_engine_torch`, and CUDA. Here the extension is a pure-PyTorch stand-in (`extension.py`, kernels written
from their math in `kernels.py` and `attention_kernels.py`) and CUDA is emulated in a scope (`emulation.py`). Where
CUDA exists, none of this is installed and the same tests run against real TE. See README.md in this directory.

Stable API (for tests of the TE backend):

    from .transformer_engine import te_runtime  # the fixture, for tests outside this directory  # noqa: F401

    def test_something(te_runtime):               # skips only where the transformer-engine wheel is not installed
        te = te_runtime.te                        # transformer_engine.pytorch (real, or over the stand-in)
        with te_runtime.active():                 # wrap EVERY call that runs TE code: build, forward, backward
            layer = te.TransformerLayer(...).to(te_runtime.device)
            out = layer(x.to(te_runtime.device))
        te_runtime.emulated                       # True on the CPU emulation
        te_runtime.device                         # torch.device("cpu") emulated, torch.device("cuda") real

- `te_runtime` (pytest fixture, session scope) -> `TERuntime(te, emulated, device)` with `.active()`.
- `requires_te`: a `pytest.mark.skipif` for tests that need the wheel without the fixture.
- `import_transformer_engine()` -> `transformer_engine.pytorch`: real TE when CUDA is available, else imported under
  the emulation (the stand-in is then `sys.modules["transformer_engine_torch"]` for the rest of the process).
- `te_cpu_emulation()`: the context manager itself (re-entrant, restores everything on exit; yields the TE module).
  Raises `TEVersionError` unless `transformer-engine==2.20.2` is installed, and `RuntimeError` where CUDA exists.
- `EmulationUnsupportedError` (a `NotImplementedError`): what every kernel the stand-in does not provide raises
  when called (FP8, communication overlap, MoE, context parallelism, ...), never a fake result.
- `TE_VERSION` ("2.20.2"), `installed_te_version()`.

Under the emulation, TE's `torch.cuda.is_available()` checks pass only inside `.active()`; code that must refuse TE
without CUDA sees the truth outside it.
"""

from .emulation import TE_VERSION, TEVersionError, installed_te_version, te_cpu_emulation
from .fixtures import requires_te, te_runtime
from .kernels import EmulationUnsupportedError
from .runtime import TERuntime, import_transformer_engine, load_te_runtime


__all__ = [
    "TE_VERSION",
    "EmulationUnsupportedError",
    "TERuntime",
    "TEVersionError",
    "import_transformer_engine",
    "installed_te_version",
    "load_te_runtime",
    "requires_te",
    "te_cpu_emulation",
    "te_runtime",
]
