"""Runs the checkpoint families' tests in upstream's tester style against upstream's own test suite.

The tests live in `tests/heterogeneity/upstream_models/<name>/test_modeling_<name>.py`; the upstream patch series puts
them at `tests/models/<name>/`. They subclass `CausalLMModelTester` / `CausalLMModelTest` of upstream's
`tests/causal_lm_tester.py`, so they need upstream's `tests/` package, which this repository does not hold. This script
assembles one in `.cache/upstream/model-tests/` (ignored) and runs pytest there, with the overlay installed as
`pip install .` installs it (a non-editable install puts the families inside upstream's `transformers/models/`, where
upstream's lazy top-level namespace finds them, as it does in the patched tree; the testers look classes up there):

- `tests/*.py` of the transformers 5.23.0 source distribution (downloaded once with pip into `.cache/upstream/`);
- what that distribution leaves out and the testers import (`tests/__init__.py`, `causal_lm_tester.py`,
  `generation/`, `exporters/`, `utils/test_configuration_utils.py` and its `utils/test_module/`, ...), from a checkout
  of huggingface/transformers given with `--upstream-checkout` (the v5.23.0 tag; the version found is printed);
- `tests/models/<name>/` from this repository, and with `--baseline MODEL` upstream's own `tests/models/MODEL/` from the
  checkout, so that a failure of upstream's harness can be told from a failure of a family;
- `src/transformers`, a link to the installed package (`test_pipeline_mixin.py` reads the library from there);
- a `conftest.py` that adds the families to upstream's Auto name tables (`CONFIG_MAPPING_NAMES`,
  `MODEL_MAPPING_NAMES`, `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, the conversion aliases), as the upstream patch series
  does: upstream's common tests read those tables (`test_training` tells base models from heads by
  `MODEL_MAPPING_NAMES`). `--overlay-registrations-only` leaves it out: the families are then known only through the
  overlay's registrations.

The overlay goes into `.cache/upstream/overlay-venv`, a fresh virtual environment holding transformers 5.23.0 and the
overlay built from the working tree (both `--no-deps`); everything else (torch, pytest, ...) comes from the environment
of the interpreter that runs this script, through a `.pth` file.

`tests/distributed_testing_utils.py` (imported by 5.23.0's tensor-parallel and FSDP mixins) is taken from the checkout
when it has it; otherwise a stand-in makes every test that would start processes skip, saying why.

Usage: `python utils/run_upstream_model_tests.py --upstream-checkout PATH [--models NAME ...] [--baseline MODEL]
[-- PYTEST_ARGS]`; `make upstream-model-tests UPSTREAM_CHECKOUT=PATH`. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path


REPOSITORY = Path(__file__).resolve().parent.parent
CACHE = REPOSITORY / ".cache" / "upstream"
VERSION = "5.23.0"
FAMILY_TESTS = REPOSITORY / "tests" / "heterogeneity" / "upstream_models"
# Files of upstream's repository that the testers import and the source distribution does not ship.
SUPPORT_FILES = (
    "tests/__init__.py",
    "tests/causal_lm_tester.py",
    "tests/generation",
    "tests/exporters",
    "tests/utils/__init__.py",
    "tests/utils/test_configuration_utils.py",
    "tests/utils/tiny_model_summary.json",
    "tests/distributed_testing_utils.py",
    "utils/test_module",
)
UPSTREAM_MAPPING_ENTRIES = '''"""Written by run_upstream_model_tests.py: upstream's Auto name tables hold the checkpoint families, as the upstream
patch series makes them do."""

from transformers import conversion_mapping
from transformers.heterogeneity.checkpoint_formats import CHECKPOINT_FORMATS
from transformers.models.auto import configuration_auto, modeling_auto


for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
    configuration_auto.CONFIG_MAPPING_NAMES[model_type] = checkpoint_format.config
    for auto_name, model_name in checkpoint_format.models.items():
        mapping = getattr(modeling_auto, auto_name)._model_mapping  # `_model_mapping` of it: the name table
        mapping._model_mapping[model_type] = model_name
        mapping._reverse_config_mapping[checkpoint_format.config] = model_type
    if checkpoint_format.weight_conversion is not None:
        conversion_mapping._MODEL_TO_CONVERSION_PATTERN[model_type] = checkpoint_format.weight_conversion
'''
DISTRIBUTED_STAND_IN = '''"""Stand-in written by run_upstream_model_tests.py: the checkout has no tests/distributed_testing_utils.py."""

import unittest


def _needs_the_real_module(*args, **kwargs):
    raise unittest.SkipTest("needs upstream's tests/distributed_testing_utils.py, which the checkout does not have")


_get_distributed_backend = _get_distributed_device_type = _get_rank_device = _needs_the_real_module
_set_rank_device = _start_rank_processes = _needs_the_real_module


def run_distributed(*args, **kwargs):
    return lambda function: _needs_the_real_module
'''


def source_distribution() -> Path:
    """The unpacked transformers sdist, downloaded with pip the first time."""
    unpacked = CACHE / f"transformers-{VERSION}"
    if not (unpacked / "tests").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        archive = CACHE / f"transformers-{VERSION}.tar.gz"
        if not archive.is_file():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
                + [f"transformers=={VERSION}", "--dest", str(CACHE)],
                check=True,
            )
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    return unpacked


def printed_by(python: Path, code: str) -> str:
    """What `code` prints when `python` runs it."""
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def overlay_environment() -> Path:
    """A fresh virtual environment with transformers 5.23.0 and the overlay installed from the working tree; returns
    its interpreter. Built from a copy of the tree, so that nothing an earlier build left in `build/` is installed."""
    venv = CACHE / "overlay-venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    with tempfile.TemporaryDirectory() as tree, tempfile.TemporaryDirectory() as wheels:
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy(REPOSITORY / name, tree)
        shutil.copytree(
            REPOSITORY / "src", Path(tree) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        pip = [sys.executable, "-m", "pip"]
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, tree], check=True)
        subprocess.run(
            [*pip, "--python", str(python), "install", "--quiet", "--no-deps", f"transformers=={VERSION}"]
            + [str(wheel) for wheel in Path(wheels).glob("*.whl")],
            check=True,
        )
    site_packages = printed_by(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # After the environment's own site-packages, so that its transformers wins; a plain path line, so that the
    # other environment's `.pth` files (its editable install of the overlay) are not processed.
    (Path(site_packages) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python


def checkout_version(checkout: Path) -> str:
    setup = (checkout / "setup.py").read_text(encoding="utf-8") if (checkout / "setup.py").is_file() else ""
    found = re.search(r'version="([^"]+)"', setup)
    return found[1] if found else "unknown"


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, target)


def assemble(
    checkout: Path, models: list[str], baselines: list[str], python: Path, mapping_entries: bool
) -> tuple[Path, list[str]]:
    """Builds the test tree; returns it and the test paths to run."""
    harness = CACHE / "model-tests"
    shutil.rmtree(harness, ignore_errors=True)
    (harness / "tests").mkdir(parents=True)
    for name in SUPPORT_FILES:
        if (checkout / name).exists():
            copy(checkout / name, harness / name)
    if not (harness / "tests" / "distributed_testing_utils.py").exists():
        print(
            "run_upstream_model_tests: no tests/distributed_testing_utils.py in the checkout; multi-process tests skip"
        )
        (harness / "tests" / "distributed_testing_utils.py").write_text(DISTRIBUTED_STAND_IN, encoding="utf-8")
    for path in (source_distribution() / "tests").glob("*.py"):  # the 5.23.0 files win over the checkout's
        copy(path, harness / "tests" / path.name)
    (harness / "tests" / "models").mkdir()
    (harness / "tests" / "models" / "__init__.py").touch()
    paths = []
    for name in models:
        copy(FAMILY_TESTS / name, harness / "tests" / "models" / name)
        paths.append(f"tests/models/{name}")
    for name in baselines:
        copy(checkout / "tests" / "models" / name, harness / "tests" / "models" / name)
        paths.append(f"tests/models/{name}")
    installed = printed_by(python, "import transformers, pathlib; print(pathlib.Path(transformers.__file__).parent)")
    (harness / "src").mkdir()
    (harness / "src" / "transformers").symlink_to(installed, target_is_directory=True)
    (harness / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # the root: no configuration of ours applies
    if mapping_entries:
        (harness / "conftest.py").write_text(UPSTREAM_MAPPING_ENTRIES, encoding="utf-8")
    return harness, paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-checkout", type=Path, required=True, help="a huggingface/transformers checkout")
    families = sorted(path.parent.name for path in FAMILY_TESTS.glob("*/test_modeling_*.py"))
    parser.add_argument("--models", nargs="+", default=families, choices=families)
    parser.add_argument("--baseline", action="append", default=[], help="an upstream model whose tests run too")
    parser.add_argument(
        "--overlay-registrations-only",
        action="store_true",
        help="do not add the families to upstream's Auto name tables (see the module docstring)",
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after `--`)")
    args = parser.parse_args()
    checkout = args.upstream_checkout.resolve()
    if not (checkout / "tests" / "causal_lm_tester.py").is_file():
        parser.error(f"{checkout} has no tests/causal_lm_tester.py: give a checkout of huggingface/transformers")
    print(
        f"run_upstream_model_tests: tests/*.py of transformers {VERSION}, the rest from a checkout at version "
        f"{checkout_version(checkout)} ({checkout})"
    )
    python = overlay_environment()
    harness, paths = assemble(checkout, args.models, args.baseline, python, not args.overlay_registrations_only)
    print(
        "run_upstream_model_tests: the families are "
        + (
            "known only through the overlay's registrations"
            if args.overlay_registrations_only
            else "in upstream's Auto name tables (conftest.py)"
        )
    )
    command = [str(python), "-m", "pytest", *paths, "-p", "no:cacheprovider", "-q", "-rfE", *args.pytest_args]
    return subprocess.run(command, cwd=harness).returncode


if __name__ == "__main__":
    sys.exit(main())
