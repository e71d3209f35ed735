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
"""These tests need llama.cpp built from the llama-cpp-python source distribution: `make llama-cpp-check` builds it
once (cached) and runs them; `make test` skips them."""

import os
from pathlib import Path

import pytest


HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLAMA_CPP_SOURCE") and os.environ.get("LLAMA_CPP_LIB_PATH"):
        return
    skip = pytest.mark.skip(reason="needs the llama.cpp build: run `make llama-cpp-check`")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)
