#!/usr/bin/env bash
# Configures and builds sockwatch into build/ (or $BUILD_DIR). Extra arguments
# go to cmake, e.g. -DSOCKWATCH_SANITIZE=ON.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
