#!/usr/bin/env bash
# A heterogeneous child against its parent on one NVIDIA GPU, in one command (`make bench-gpu`; details in
# `benchmarks/gpu.py`): eager decode and prefill (SDPA, and flash attention where installed), continuous batching
# throughput and KV capacity in a fixed memory budget, torch.compile decode, and the TransformerEngine path where TE
# is installed. Writes gpu.json and gpu.png into --output-dir (default: $OUT where set, else benchmarks/results/gpu).
#
# For a machine with CUDA PyTorch but without network or this package: `make gpu-wheels` (where pip can download)
# puts the wheels in .whl/ (transformers==5.23.0, this package, and fallbacks for the requirements a machine may not
# meet); this script installs them with `pip install --no-deps --target` into a private directory (--site), completes
# it from the fallbacks only where the machine's own packages fall short (benchmarks/gpu_env.py), and runs with that
# directory first on the path. The machine's torch is never replaced.
#
#   benchmarks/gpu.sh [--dry-run] [--python PYTHON] [--wheels DIR] [--site DIR] [--output-dir DIR] [gpu.py options]
#
# --dry-run runs everything on tiny sizes on the CPU (well under a minute): a check of the script, not a measurement.
# Without wheels in --wheels, a dry run uses the interpreter's own environment (a development install).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="python3"
WHEELS="$REPO/.whl"
SITE="${TMPDIR:-/tmp}/transformers-heterogeneity-gpu-site"
OUTPUT_DIR="${OUT:-$REPO/benchmarks/results/gpu}"
DRY_RUN=0
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; PASS+=("--dry-run"); shift ;;
        --python) PYTHON="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --site) SITE="$2"; shift 2 ;;
        --output-dir) OUTPUT_DIR="$2"; shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done

if compgen -G "$WHEELS/transformers-5.23.0-*.whl" > /dev/null && compgen -G "$WHEELS/transformers_heterogeneity-*.whl" > /dev/null; then
    echo "gpu.sh: installing the carried wheels into $SITE" >&2
    rm -rf "$SITE"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" \
        "$WHEELS"/transformers-5.23.0-*.whl "$WHEELS"/transformers_heterogeneity-*.whl
    PYTHONPATH="$SITE:$REPO" "$PYTHON" -m benchmarks.gpu_env --site "$SITE" --fallback "$WHEELS/fallback"
elif [[ $DRY_RUN == 1 ]]; then
    echo "gpu.sh: no wheels in $WHEELS; the dry run uses $PYTHON's own environment" >&2
    SITE=""
else
    echo "gpu.sh: no transformers-5.23.0 and transformers_heterogeneity wheels in $WHEELS: run \`make gpu-wheels\`" \
        "where pip can download, and carry .whl/ to this machine" >&2
    exit 1
fi

# The private directory goes first on the path (before the machine's own Transformers), and its `.pth` file runs as
# in an installation (`site.addsitedir`), before anything imports transformers: the package activates itself as for
# a user. The benchmark records whether it did.
cd "$REPO"
PYTHONPATH="${SITE:+$SITE:}$REPO" exec "$PYTHON" -c '
import site, sys
if sys.argv[1]:
    site.addsitedir(sys.argv[1])
started_with_hook = "transformers_heterogeneity_hook" in sys.modules
from benchmarks import gpu
sys.exit(gpu.main(sys.argv[2:], started_with_hook=started_with_hook))
' "$SITE" --output-dir "$OUTPUT_DIR" "${PASS[@]}"
