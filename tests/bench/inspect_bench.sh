#!/usr/bin/env bash
# Cost of the tc inspection programs on a bulk transfer: iperf3 over a veth
# between two network namespaces, interleaved in one run:
#   none     no agent
#   capture  the agent with inspection off (--inspect_interfaces=none)
#   inspect  the agent inspecting the sender's namespace (tc ingress + egress)
# Prints each round and the medians, and the throughput ratio inspect/capture.
#   sudo tests/bench/inspect_bench.sh [ROUNDS] [SECONDS]      (default 5 rounds of 5 s)
# Env: BUILD_DIR (default build/).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
agent=$build/agent/sockwatch-agent
rounds=${1:-5}
secs=${2:-5}
[ "$(id -u)" = 0 ] || { echo "inspect_bench: needs root" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "inspect_bench: iperf3 is missing (deploy/install-deps.sh)" >&2; exit 2; }
[ -x "$agent" ] || { echo "inspect_bench: build the agent first ($agent)" >&2; exit 2; }

c=swbc$$
s=swbs$$
state=$(mktemp -d /tmp/sw_inspect_bench.XXXXXX)
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
ip netns add "$c"
ip netns add "$s"
ip link add "$c" netns "$c" type veth peer name "$s" netns "$s"
ip -n "$c" addr add 10.232.0.1/24 dev "$c"
ip -n "$s" addr add 10.232.0.2/24 dev "$s"
ip -n "$c" link set "$c" up
ip -n "$s" link set "$s" up
ip -n "$c" link set lo up
ip -n "$s" link set lo up
ip netns exec "$s" iperf3 -s -B 10.232.0.2 >/dev/null 2>&1 &
server_pid=$!
sleep 1

start_agent() {
  "$agent" --print=none --state_dir="$state" --history=false --inspect_netns="/run/netns/$c" "$@" \
    2>"$state/agent.err" &
  agent_pid=$!
  for _ in $(seq 100); do
    grep -q "running" "$state/agent.err" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "inspect_bench: agent did not start:" >&2
  cat "$state/agent.err" >&2
  exit 1
}
stop_agent() {
  kill "$agent_pid"
  wait "$agent_pid" || true
  agent_pid=
}
gbits() {
  ip netns exec "$c" iperf3 -c 10.232.0.2 -t "$secs" -J |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

declare -a none capture inspect
for r in $(seq "$rounds"); do
  none+=("$(gbits)")
  start_agent --inspect_interfaces=none
  capture+=("$(gbits)")
  stop_agent
  start_agent
  inspect+=("$(gbits)")
  stop_agent
  echo "round $r: none ${none[-1]} Gbit/s, capture ${capture[-1]}, inspect ${inspect[-1]}"
done
python3 - "${none[*]}" "${capture[*]}" "${inspect[*]}" <<'EOF'
import statistics, sys
n, c, i = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:4])
print(f"median Gbit/s: none {n:.3f}, capture {c:.3f}, inspect {i:.3f}")
print(f"inspect vs capture: {100 * (i / c - 1):+.1f} %; inspect vs none: {100 * (i / n - 1):+.1f} %")
EOF
