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
"""Pytest fixtures for tests that run TransformerEngine (re-exported by this directory's `conftest.py`).

Tests elsewhere import them into their module: `from .transformer_engine import te_runtime  # noqa: F401`.
"""

from __future__ import annotations

import pytest

from .emulation import TE_VERSION, installed_te_version
from .runtime import TERuntime, load_te_runtime


requires_te = pytest.mark.skipif(
    installed_te_version() is None,
    reason=f"transformer-engine is not installed (`make install`: `pip install --no-deps --target .venv/te-cpu transformer-engine=={TE_VERSION}`)",
)


@pytest.fixture(scope="session")
def te_runtime() -> TERuntime:
    """The TE of this machine; skips the test only where the `transformer-engine` wheel is not installed at all.

    A wrong TE version fails (`TEVersionError`) instead of skipping, so CI cannot pass without running the TE tests.
    """
    if installed_te_version() is None:
        pytest.skip(
            f"transformer-engine is not installed (`make install`: `pip install --no-deps --target .venv/te-cpu transformer-engine=={TE_VERSION}`)"
        )
    return load_te_runtime()
