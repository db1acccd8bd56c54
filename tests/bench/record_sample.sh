#!/usr/bin/env bash
# Re-creates the committed decode_bench input, tests/bench/data/sample.rec:
# runs the agent with --record while a loopback workload runs for
# WORKLOAD_SECS (short-lived processes: curl over IPv4 and IPv6, refused
# connects, a python client making five connections, UDP sends and receives
# on connected and unconnected sockets, shell pipelines), then keeps the first
# MAX_RECORDS records (and under 2 MB). Needs root and a built agent.
#   sudo tests/bench/record_sample.sh [OUT]
# Env: AGENT (agent binary), WORKLOAD_SECS (15), MAX_RECORDS (6000).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
agent=${AGENT:-$top/build/agent/sockwatch-agent}
out=${1:-$top/tests/bench/data/sample.rec}
secs=${WORKLOAD_SECS:-15}
max_records=${MAX_RECORDS:-6000}
py=/usr/bin/python3  # not a pyenv shim: its wrapper scripts would flood the exec mix

# Needs python3 and curl besides the build dependencies: apt-get install python3 curl
if [ "$(id -u)" != 0 ]; then echo "record_sample.sh: needs root (loads BPF)" >&2; exit 2; fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$agent" --record="$work/raw.rec" --print=none --snapshot=false --duration=$((secs + 5))s \
  2>"$work/agent.err" &
agent_pid=$!
for _ in $(seq 100); do grep -q running "$work/agent.err" && break; sleep 0.1; done
grep -q running "$work/agent.err" || { cat "$work/agent.err" >&2; exit 1; }

mkdir -p "$work/www"
echo "hello" >"$work/www/index.html"
(cd "$work/www" && exec $py -m http.server --bind 127.0.0.1 18080 >/dev/null 2>&1) & pids+=($!)
(cd "$work/www" && exec $py -m http.server --bind ::1 18081 >/dev/null 2>&1) & pids+=($!)
# UDP echo: recvfrom (UDP_RECV) and sendto each new client (UDP_SEND).
$py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 18053))
while True:
    data, addr = s.recvfrom(512)
    s.sendto(data, addr)
' & pids+=($!)
sleep 1

end=$((SECONDS + secs))
i=0
while [ $SECONDS -lt $end ]; do
  curl -s -o /dev/null http://127.0.0.1:18080/index.html || true
  curl -s -o /dev/null "http://[::1]:18081/" || true
  if (( i % 4 == 0 )); then curl -s -o /dev/null http://127.0.0.1:18099/ || true; fi  # refused
  if (( i % 3 == 0 )); then printf 'x' | nc -u -w0 127.0.0.1 18053 >/dev/null 2>&1 || true; fi  # connected UDP
  if (( i % 4 == 1 )); then
    $py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.sendto(b"q", ("127.0.0.1", 18053))
s.recvfrom(64)
' || true
  fi
  if (( i % 2 == 0 )); then  # one process, several outbound connections
    $py -c '
import http.client
for _ in range(5):
    c = http.client.HTTPConnection("127.0.0.1", 18080, timeout=2)
    c.request("GET", "/index.html")
    c.getresponse().read()
    c.close()
' || true
  fi
  sh -c 'ls / | wc -l' >/dev/null
  i=$((i + 1))
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
pids=()
wait "$agent_pid" || true
cat "$work/agent.err" >&2

mkdir -p "$(dirname "$out")"
$py - "$work/raw.rec" "$out" "$max_records" <<'PY'
import struct, sys, collections
src, dst, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
names = {1: "exec", 2: "fork", 3: "exit", 4: "tcp_connect", 5: "tcp_accept", 6: "tcp_listen",
         7: "tcp_close", 8: "udp_send", 9: "udp_recv", 10: "udp_connect"}
off, kept, mix = 0, bytearray(), collections.Counter()
while off + 4 <= len(data) and sum(mix.values()) < limit:
    (n,) = struct.unpack_from("<I", data, off)
    rec = data[off + 4: off + 4 + n]
    if len(rec) < n:
        break
    if len(kept) + 4 + n > 2_000_000:
        break
    kept += data[off: off + 4 + n]
    mix[names.get(struct.unpack_from("<H", rec, 0)[0], "unknown")] += 1
    off += 4 + n
open(dst, "wb").write(kept)
print(f"{dst}: {sum(mix.values())} records, {len(kept)} bytes (from {len(data)})")
for k, v in sorted(mix.items(), key=lambda kv: -kv[1]):
    print(f"  {k:12} {v}")
PY
