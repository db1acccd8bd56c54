#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs what is
# missing, builds, and runs unit and privileged integration tests; then builds
# again with ASan + UBSan and runs the suite under it.
#   sudo ./tests/run.sh            # everything
#   SOCKWATCH_NO_SANITIZE=1 ./tests/run.sh   # skip the sanitizer pass
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/deploy/install-deps.sh"

BUILD_DIR="$top/build" "$top/deploy/build.sh"
(cd "$top/build" && ctest --output-on-failure --timeout 600)

if [ -z "${SOCKWATCH_NO_SANITIZE:-}" ]; then
  BUILD_DIR="$top/build-asan" "$top/deploy/build.sh" -DSOCKWATCH_SANITIZE=ON
  (cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure --timeout 900)
fi
