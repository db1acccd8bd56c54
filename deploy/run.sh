#!/usr/bin/env bash
# The main job on one host: install what is missing, build, make development
# certificates and a query token (once), start sockwatch-collector on loopback
# (mTLS, SQLite store, query port +1) and the agent streaming to it and
# printing events. Arguments go to
# sockwatch-agent (default --print=text).
#   sudo ./deploy/run.sh                 # text, until Ctrl-C
#   sudo ./deploy/run.sh --print=json
#   SOCKWATCH_NO_COLLECTOR=1 sudo ./deploy/run.sh   # the agent alone
#   SOCKWATCH_STORE=clickhouse://127.0.0.1:8123/sockwatch sudo ./deploy/run.sh
#                                        # a running ClickHouse instead of SQLite
# State (certificates, spool, baseline, history, collector.db, collector.log)
# lives in SOCKWATCH_STATE (default /var/lib/sockwatch).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/deploy/install-deps.sh"
"$top/deploy/build.sh"
build=${BUILD_DIR:-$top/build}
state=${SOCKWATCH_STATE:-/var/lib/sockwatch}
[ $# -eq 0 ] && set -- --print=text
mkdir -p "$state"
if [ -n "${SOCKWATCH_NO_COLLECTOR:-}" ]; then
  exec "$build/agent/sockwatch-agent" --state_dir="$state" "$@"
fi

# The agent's certificate must name its host id (the CN); use the same id.
host_id=$(tr -cd 'A-Za-z0-9._:@-' </etc/machine-id 2>/dev/null || true)
[ -n "$host_id" ] || host_id=$(hostname | tr -cd 'A-Za-z0-9._:@-')
certs=$state/certs
[ -f "$certs/agents/$host_id.pem" ] || "$top/deploy/certs/make-certs.sh" --out "$certs" "$host_id"

# A query token for the sockwatch CLI (admin), made once.
if [ ! -s "$state/cli-token" ]; then
  (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$state/cli-token")
  (umask 077; echo "admin $(cat "$state/cli-token") local-admin" >"$state/tokens")
fi

port=${SOCKWATCH_PORT:-7443}
qport=$((port + 1))
store=${SOCKWATCH_STORE:-sqlite:$state/collector.db}
"$build/collector/sockwatch-collector" --listen="127.0.0.1:$port" --store="$store" \
  --tls_ca="$certs/ca.pem" --tls_cert="$certs/collector.pem" --tls_key="$certs/collector.key" \
  --query_listen="127.0.0.1:$qport" --tokens="$state/tokens" \
  2>>"$state/collector.log" &
collector=$!
trap 'kill $collector 2>/dev/null; wait $collector 2>/dev/null || true' EXIT
echo "sockwatch-collector on 127.0.0.1:$port (log $state/collector.log, store $store)" >&2
echo "query it: $build/collector/sockwatch --collector=127.0.0.1:$qport --tls_ca=$certs/ca.pem --token-file=$state/cli-token alerts" >&2
"$build/agent/sockwatch-agent" --state_dir="$state" --host_id="$host_id" \
  --collector="127.0.0.1:$port" --tls_ca="$certs/ca.pem" \
  --tls_cert="$certs/agents/$host_id.pem" --tls_key="$certs/agents/$host_id.key" "$@"
