#!/usr/bin/env bash
# Stops the server tests/clickhouse/start.sh started in DIR and deletes DIR.
#   tests/clickhouse/stop.sh DIR
# Succeeds when there is nothing to stop.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
[ -d "$dir" ] || exit 0
if [ -f "$dir/pid" ]; then
  pid=$(cat "$dir/pid")
  # Only our server: the pid must still be a clickhouse-server run with
  # this directory's config (pids are reused).
  if grep -qa -- "--config-file=$(cd "$dir" && pwd)/config.xml" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: clickhouse-server $pid ignored SIGTERM for 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
fi
rm -rf "$dir"
