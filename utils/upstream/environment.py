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
"""The environment that tests the patched Transformers tree: this repository's test dependencies, and no overlay.

    python utils/upstream/environment.py requirements    # setup.py's test dependencies, without Transformers
    python utils/upstream/environment.py check-install   # (run by the tested environment's python) no overlay there

Only the standard library (and setuptools, to read setup.py) is used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path


REPOSITORY = Path(__file__).resolve().parents[2]


class OverlayInstalledError(RuntimeError):
    """Something of this repository's overlay is installed where the patched tree is tested."""


def testing_requirements() -> list[str]:
    """setup.py's `testing` extra and install requirements, without Transformers itself (the patched tree is it)."""
    import setuptools

    captured = {}
    setup, setuptools.setup = setuptools.setup, lambda **kwargs: captured.update(kwargs)
    cwd = Path.cwd()
    try:
        os.chdir(REPOSITORY)
        exec(compile((REPOSITORY / "setup.py").read_text(encoding="utf-8"), "setup.py", "exec"), {"__name__": "setup"})
    finally:
        setuptools.setup = setup
        os.chdir(cwd)
    requirements = [*captured["install_requires"], *captured["extras_require"]["testing"]]
    return [requirement for requirement in requirements if not re.match(r"transformers\b(?!-)", requirement)]


def check_install() -> None:
    """In the interpreter that runs it: Transformers, `transformers.heterogeneity` included, is the installed patched
    tree, and nothing of this repository's overlay is installed.

    Raises:
        OverlayInstalledError: naming what of the overlay is there.
    """
    import importlib.metadata
    import importlib.util

    import transformers
    import transformers.heterogeneity

    found = []
    for module in ("transformers_heterogeneity_hook", "transformers.heterogeneity.activation"):
        if importlib.util.find_spec(module) is not None:
            found.append(f"module {module}")
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found.append(
            f"distribution transformers-heterogeneity {importlib.metadata.version('transformers-heterogeneity')}"
        )
    site_packages = Path(transformers.__file__).parent.parent
    found.extend(f"start-up file {path.name}" for path in site_packages.glob("transformers_heterogeneity*.pth"))
    package = Path(transformers.heterogeneity.__file__).parent
    if package.parent != Path(transformers.__file__).parent or REPOSITORY / "src" in package.parents:
        found.append(f"transformers.heterogeneity imported from {package}")
    if found:
        raise OverlayInstalledError(f"The patched tree must be tested without the overlay, but found: {found}.")
    print(f"transformers {transformers.__version__} from {site_packages}: patched tree, no overlay")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["requirements", "check-install"])
    if parser.parse_args().command == "requirements":
        print("\n".join(testing_requirements()))
        return 0
    try:
        check_install()
    except OverlayInstalledError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
