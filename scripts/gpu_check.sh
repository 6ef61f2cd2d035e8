#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) on a machine that has python3 with torch 2.11 and nothing else
# of ours: the carried binary runs against that torch's libtorch (LD_LIBRARY_PATH), and the
# reference's pure-Python packages come from .gpu-kit/site (made by `make gpu-kit`), searched after
# the interpreter's own packages (SNN_GPU_KIT).
# Usage: bash scripts/gpu_check.sh [--bin PATH] [--out DIR] [--device auto|cuda|cpu] [--budget S] ...
# Environment: PYTHON (default python3). Exit: 0 when no section failed (without a GPU, after the
# CPU dry run), 1 when one did.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
    echo "gpu-check: $PYTHON cannot import torch; set PYTHON to a python3 that has torch 2.11" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${SNN_GPU_KIT:-}" ] && [ -d .gpu-kit/site ]; then
    export SNN_GPU_KIT="$PWD/.gpu-kit/site"
fi
export PYTHONUNBUFFERED=1 SNN_PYTHON="$PYTHON"
exec "$PYTHON" scripts/gpu_check.py "$@"
