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
"""The wheel adds the package's files inside upstream's `transformers/` directory and nothing else: every module of
the repository, at the path it has in the repository, and no file that upstream's own distribution holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPOSITORY = Path(__file__).resolve().parents[2]
SOURCE = REPOSITORY / "src"


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    """The files of a wheel built from a copy of the working tree (`pip install .` installs exactly these); a copy, so
    that files left in `build/` by earlier builds cannot end up in it."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, tree / name)
    shutil.copytree(SOURCE, tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), "."],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def test_the_wheel_holds_every_module_of_the_repository_at_its_path(wheel_files):
    modules = {str(path.relative_to(SOURCE)) for path in (SOURCE / "transformers").rglob("*.py")}
    assert {name for name in wheel_files if name.startswith("transformers/")} == modules


def test_the_wheel_shadows_no_upstream_file(wheel_files):
    """No `transformers/__init__.py` or `transformers/models/__init__.py`: installing would replace upstream's. Under
    `transformers/models/` only the checkpoint families' own packages."""
    from transformers.heterogeneity.checkpoint_formats import CHECKPOINT_FORMATS

    packages = {checkpoint_format.package for checkpoint_format in CHECKPOINT_FORMATS.values()}
    assert "transformers/__init__.py" not in wheel_files and "transformers/models/__init__.py" not in wheel_files
    models = {name.split("/")[2] for name in wheel_files if name.startswith("transformers/models/")}
    assert models == packages
    assert {name for name in wheel_files if "/" not in name} == {
        "transformers_heterogeneity.pth",
        "transformers_heterogeneity_hook.py",
    }
