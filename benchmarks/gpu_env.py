"""Completes the private package directory that `gpu.sh` installs the carried wheels into, on a machine without network.

`gpu.sh` installs `transformers==5.23.0` and this package with `pip install --no-deps --target SITE`: nothing of the
machine is replaced, and its torch stays the one in use. This module then checks every requirement of both against
what the interpreter sees with SITE first on its path (SITE, then the machine's own packages), installs a carried
fallback wheel (`.whl/fallback/`, from `make gpu-wheels`) into SITE for each requirement the machine does not meet, and
checks again, until all are met; else it names what is missing and exits 1. Standard library and `packaging` only
(present wherever pip is).

    PYTHONPATH=SITE python -m benchmarks.gpu_env --site SITE --fallback .whl/fallback
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version


ROOTS = ("transformers", "transformers-heterogeneity")
# Never taken from the fallback wheels: the machine's build is the one that matches its GPU and driver.
NEVER_REPLACED = frozenset({"torch", "triton"})


def installed_versions() -> dict[str, Version]:
    """Every distribution the interpreter sees, by canonical name; the first on the path wins, as for imports."""
    versions: dict[str, Version] = {}
    for distribution in importlib.metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        versions.setdefault(name, Version(distribution.version))
    return versions


def requirements_of(name: str) -> list[Requirement]:
    """The unconditional requirements of an installed distribution (extras left out, markers evaluated here)."""
    requirements = []
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            requirements.append(requirement)
    return requirements


def unmet(roots: tuple[str, ...], versions: dict[str, Version]) -> list[Requirement]:
    """The requirements, of `roots` and of everything they require in turn, that `versions` does not satisfy."""
    missing, seen, queue = [], set(), list(roots)
    while queue:
        name = canonicalize_name(queue.pop())
        if name in seen or name not in versions:
            continue
        seen.add(name)
        for requirement in requirements_of(name):
            found = versions.get(canonicalize_name(requirement.name))
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                missing.append(requirement)
            else:
                queue.append(requirement.name)
    return missing


def pick_wheels(missing: list[Requirement], wheels: list[Path]) -> tuple[list[Path], list[Requirement]]:
    """For each unmet requirement, the newest carried wheel that satisfies it (never torch); and what has none."""
    picked, unavailable = [], []
    for requirement in missing:
        name = canonicalize_name(requirement.name)
        candidates = []
        for wheel in wheels:
            wheel_name, version, *_ = parse_wheel_filename(wheel.name)
            if wheel_name == name and name not in NEVER_REPLACED and requirement.specifier.contains(version, True):
                candidates.append((version, wheel))
        if candidates:
            picked.append(max(candidates)[1])
        else:
            unavailable.append(requirement)
    return picked, unavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True, help="the private directory the wheels went into")
    parser.add_argument("--fallback", type=Path, required=True, help="carried wheels for unmet requirements")
    args = parser.parse_args(argv)
    wheels = sorted(args.fallback.glob("*.whl")) if args.fallback.is_dir() else []
    for _ in range(10):  # each round may add a fallback whose own requirements are then checked
        importlib.invalidate_caches()
        missing = unmet(ROOTS, installed_versions())
        if not missing:
            print(f"gpu_env: every requirement of {', '.join(ROOTS)} is met", file=sys.stderr)
            return 0
        picked, unavailable = pick_wheels(missing, wheels)
        if unavailable:
            print(
                f"gpu_env: no installed or carried distribution meets {[str(r) for r in unavailable]} (carried: "
                f"{[w.name for w in wheels]}); run `make gpu-wheels` where pip can download",
                file=sys.stderr,
            )
            return 1
        print(f"gpu_env: installing {[w.name for w in picked]} for {[str(r) for r in missing]}", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
             "--target", str(args.site), *map(str, picked)],
            check=True,
        )  # fmt: skip
    print("gpu_env: the requirements did not settle after 10 rounds", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
