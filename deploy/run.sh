#!/usr/bin/env bash
# The main job on one host: install what is missing, build, and start the
# agent printing events. Arguments go to sockwatch-agent (default --print=text).
#   sudo ./deploy/run.sh                 # text, until Ctrl-C
#   sudo ./deploy/run.sh --print=json
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/deploy/install-deps.sh"
"$top/deploy/build.sh"
[ $# -eq 0 ] && set -- --print=text
exec "${BUILD_DIR:-$top/build}/agent/sockwatch-agent" "$@"
