#!/usr/bin/env bash
# The GPU check of issue 7 on a machine that has python3 with torch 2.11 and nothing else of ours:
# the carried binary runs against that torch's libtorch (LD_LIBRARY_PATH), and the reference's
# packages come from .gpu-kit/site when python3 lacks them (made here by `make gpu-kit`).
# Usage: bash scripts/gpu_check.sh [--bin PATH] [--out DIR] [--repeats N]
# Environment: PYTHON (default python3). Exit: 0 all passed, 1 a check failed, 2 no GPU here.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
    echo "gpu-check: $PYTHON cannot import torch; set PYTHON to a python3 that has torch 2.11" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -d .gpu-kit/site ]; then
    export PYTHONPATH="$PWD/.gpu-kit/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "$@"
