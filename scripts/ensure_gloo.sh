#!/usr/bin/env bash
# Makes sure gloo's headers are installed: libtorch's ProcessGroupGloo.hpp includes them and the
# torch wheel does not ship them, so the c10d shim (csrc/) needs them to build with Gloo, the
# backend of multi-process training on the CPU. Debian and Ubuntu package them as libgloo-dev.
# Does nothing when they are present (in /usr/include or $GLOO_INCLUDE_DIR).
set -euo pipefail

for dir in "${GLOO_INCLUDE_DIR:-}" /usr/include; do
    if [ -n "$dir" ] && [ -f "$dir/gloo/config.h" ]; then
        exit 0
    fi
done

if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo -n"
    fi
    echo "installing libgloo-dev (gloo's headers, for multi-process training on the CPU)"
    if $sudo apt-get install -y -qq --no-install-recommends libgloo-dev >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends libgloo-dev >/dev/null; }; then
        exit 0
    fi
fi

echo "error: gloo's headers are missing and could not be installed: install libgloo-dev" \
    "(apt-get install libgloo-dev) or point GLOO_INCLUDE_DIR at a gloo include directory" >&2
exit 1
