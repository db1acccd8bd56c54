#!/usr/bin/env bash
# Builds and runs every benchmark and prints its output. See BENCHMARKS.md.
#   sudo tests/bench/run.sh
# Env: BUILD_DIR (default build/), DECODE_ARGS and CONNECT_ARGS (extra flags,
# e.g. CONNECT_ARGS="--connections=5000 --rounds=3" for a quick run).
# Also runs detect_bench (detection pipeline); DETECT_ARGS adds flags to it,
# e.g. DETECT_ARGS=--scale-images=0 skips its 1M-behaviour baseline section;
# STREAM_ARGS=--events=N sets stream_bench's events per configuration.
# store_bench loads 10M events into SQLite and, when clickhouse-server is
# installed, a throwaway ClickHouse (tests/clickhouse/start.sh); STORE_ARGS adds
# flags, e.g. STORE_ARGS=--events=1000000 for a quicker run. INSPECT_ARGS="ROUNDS
# SECONDS" sets inspect_bench's rounds (default 5 of 5 s).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
if [ "$(id -u)" != 0 ]; then
  echo "run.sh: needs root (connect_bench starts the agent, which loads BPF programs): sudo $0" >&2
  exit 2
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target sockwatch-agent decode_bench connect_bench >/dev/null
cmake --build "$build" -j"$(nproc)" --target detect_bench spool_bench ingest_bench stream_bench >/dev/null
cmake --build "$build" -j"$(nproc)" --target classify_bench >/dev/null
cmake --build "$build" -j"$(nproc)" --target store_bench >/dev/null

echo "== decode_bench (userspace decode + process table, one core)"
# shellcheck disable=SC2086
"$build/tests/bench/decode_bench" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true ${DECODE_ARGS:-}
echo
echo "== detect_bench (identity + baseline + detectors, one core; baseline at 1M behaviours)"
# shellcheck disable=SC2086
"$build/tests/bench/detect_bench" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true ${DETECT_ARGS:-}
echo
echo "== classify_bench (protocol identification + syntax checks on 256-byte samples, one core)"
"$build/tests/bench/classify_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
echo
echo "== spool_bench (agent disk spool: append per fsync policy, replay)"
"$build/tests/bench/spool_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
echo
echo "== ingest_bench (collector store: SQLite writes per batch size)"
"$build/tests/bench/ingest_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
echo
echo "== stream_bench (agents -> collector over gRPC, end to end, SQLite store)"
# shellcheck disable=SC2086
"$build/tests/bench/stream_bench" ${STREAM_ARGS:-}
echo
echo "== store_bench (collector stores at fleet scale: ingest, SOC query latency)"
stores=(--store=sqlite:/var/tmp)
ch_dir=""
if command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ]; then
  ch_dir=$(mktemp -d /tmp/sw_store_bench_ch.XXXXXX)
  trap '"$top/tests/clickhouse/stop.sh" "$ch_dir"' EXIT
  ch_url=$("$top/tests/clickhouse/start.sh" "$ch_dir")
  stores+=("--store=clickhouse://${ch_url#http://}")
fi
# shellcheck disable=SC2086
"$build/tests/bench/store_bench" "${stores[@]}" ${STORE_ARGS:-}
if [ -n "$ch_dir" ]; then
  "$top/tests/clickhouse/stop.sh" "$ch_dir"
  trap - EXIT
fi
echo
echo "== inspect_bench (iperf3 over veth: no agent / agent without inspection / with tc inspection)"
# shellcheck disable=SC2086
BUILD_DIR="$build" "$top/tests/bench/inspect_bench.sh" ${INSPECT_ARGS:-}
echo
echo "== connect_bench (TCP connect latency with and without the agent)"
# shellcheck disable=SC2086
"$build/tests/bench/connect_bench" ${CONNECT_ARGS:---agent-arg=--detect=false --cpu=0}
