#!/usr/bin/env bash
# Starts a throwaway ClickHouse server for the store tests and prints its URL.
#   tests/clickhouse/start.sh DIR [PORT]
# Config, data and logs live in DIR (replaced if present; a server left there
# by an interrupted run is stopped first). It listens on 127.0.0.1:PORT for
# HTTP only -- no native, interserver or MySQL port to collide with anything
# -- and PORT defaults to a free one. Returns once the server answers.
# Stop it with tests/clickhouse/stop.sh DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [PORT]" >&2
  exit 2
fi
dir=$1
port=${2:-}
server=$(command -v clickhouse-server || true)
[ -n "$server" ] || server=/usr/sbin/clickhouse-server
if [ ! -x "$server" ]; then
  echo "start.sh: clickhouse-server not found; run deploy/install-deps.sh" >&2
  exit 1
fi

in_use() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

"$here/stop.sh" "$dir" >/dev/null
if [ -z "$port" ]; then
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 20000))
    in_use "$port" || break
  done
fi
if in_use "$port"; then
  echo "start.sh: port $port is in use:" >&2
  ss -Htlnp "sport = :$port" >&2 || true
  echo "start.sh: pick another (cmake -DSOCKWATCH_TEST_CLICKHOUSE_PORT=...)" >&2
  exit 1
fi

mkdir -p "$dir"/{data,tmp,user_files,format_schemas}
dir=$(cd "$dir" && pwd)
# Small caches: a test server holds megabytes, and the machine runs builds.
cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>$dir/server.log</log>
    <errorlog>$dir/server.err.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$port</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
XML

# Detached from the caller's terminal and pipes: ctest waits for every
# holder of its output pipe to exit, so the server must not hold one.
setsid "$server" --config-file="$dir/config.xml" </dev/null >"$dir/stdout.log" 2>&1 &
echo $! >"$dir/pid"
url="http://127.0.0.1:$port"
for _ in $(seq 300); do
  if [ "$(curl -s --max-time 1 --noproxy '*' "$url/ping" || true)" = "Ok." ]; then
    echo "$url"
    exit 0
  fi
  if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "start.sh: clickhouse-server exited; its logs:" >&2
    tail -n 20 "$dir/stdout.log" "$dir/server.err.log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
echo "start.sh: clickhouse-server did not answer on $url within 60 s; its logs:" >&2
tail -n 20 "$dir/server.err.log" >&2 2>/dev/null || true
"$here/stop.sh" "$dir" >/dev/null
exit 1
