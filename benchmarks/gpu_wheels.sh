#!/usr/bin/env bash
# Prepares, where pip can download, the wheels that benchmarks/gpu.sh installs on a GPU machine without network
# (`make gpu-wheels`):
#
#   .whl/transformers-5.23.0-py3-none-any.whl         the pinned upstream release
#   .whl/transformers_heterogeneity-*.whl             this package, built from the working tree
#   .whl/fallback/*.whl                               their requirements, with their own, for CPython 3.12 on x86-64
#                                                     Linux: installed there only where the machine's packages fall
#                                                     short (benchmarks/gpu_env.py); numpy and torch are left out
#
#   benchmarks/gpu_wheels.sh [DEST]     (DEST defaults to .whl/, which git ignores; GPU_PYTHON_VERSION=3.12)
#
# Carry DEST with the working tree (the device tool's `carry`, or any copy) and run benchmarks/gpu.sh there.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEST="${1:-$REPO/.whl}"
TARGET=(--only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

rm -rf "$DEST"
mkdir -p "$DEST/fallback"
"$PYTHON" -m pip download --quiet --no-deps "${TARGET[@]}" -d "$DEST" "transformers==5.23.0"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$DEST" "$REPO"
"$PYTHON" -m pip download --quiet "${TARGET[@]}" -d "$DEST/fallback" "$DEST"/transformers-5.23.0-*.whl \
    "$DEST"/transformers_heterogeneity-*.whl
# Never installed from here: the two wheels above; numpy (transformers needs numpy>=1.17, and the machine's torch comes
# with one); torch and what only torch pulls in (none of the two requires torch, so pip downloaded none of it).
rm -f "$DEST"/fallback/transformers-5.23.0-*.whl "$DEST"/fallback/transformers_heterogeneity-*.whl \
    "$DEST"/fallback/numpy-*.whl
echo "gpu_wheels.sh: $(ls "$DEST"/*.whl | wc -l) wheels and $(ls "$DEST"/fallback/*.whl | wc -l) fallbacks in $DEST" \
    "($(du -sh "$DEST" | cut -f1)); carry it with the working tree and run benchmarks/gpu.sh" >&2
