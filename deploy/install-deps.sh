#!/usr/bin/env bash
# Installs exactly what sockwatch's build and tests need, from Debian 12 packages.
# Safe to run twice: apt-get skips what is already installed, and the package lists
# are refreshed only when a package is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (apt-get installs packages)" >&2
  exit 1
fi

PKGS=(
  # build
  build-essential cmake pkg-config git
  # BPF: compiler, skeleton generator, library
  clang libbpf-dev bpftool libelf-dev zlib1g-dev
  # protobuf + gRPC + Abseil
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc libabsl-dev
  # storage; ClickHouse's HTTP client (libcurl), and the server the store
  # tests start on a port of their own (tests/clickhouse/start.sh)
  libsqlite3-dev sqlite3 libssl-dev libcurl4-openssl-dev curl
  clickhouse-server clickhouse-client
  # mTLS: development certificates (deploy/certs/make-certs.sh)
  openssl
  # detection: exceptions file (YAML) and its regexes
  libyaml-cpp-dev libre2-dev
  # tests and benchmarks (ip netns + veth; pkill; setpriv is in util-linux)
  libgtest-dev libgmock-dev libbenchmark-dev
  # fuzz tests (tests/fuzz): clang's libFuzzer, ASan and UBSan runtimes
  libclang-rt-14-dev
  iproute2 procps
  # protocol inspection tests and benchmark: real TLS/HTTP clients and
  # servers (openssl, curl, python3), TCP scans (hping3), bulk transfer (iperf3)
  python3 hping3 iperf3
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# The package enables and starts a system-wide server (ports 8123, 9000,
# 9009, data in /var/lib/clickhouse). The tests start their own; a service
# nobody asked for would only take memory and ports. Only when we installed
# it: a server someone set up before is theirs.
for p in "${missing[@]}"; do
  [ "$p" = clickhouse-server ] || continue
  if [ -d /run/systemd/system ]; then
    systemctl disable --now clickhouse-server.service >/dev/null 2>&1 || true
  else
    # No systemd (a container): the SysV script may have started it. Not
    # its "stop", which kills every clickhouse-server on the machine; only
    # the one running as the package's user.
    systemctl disable clickhouse-server.service >/dev/null 2>&1 || true
    update-rc.d clickhouse-server disable >/dev/null 2>&1 || true
    start-stop-daemon --stop --quiet --retry=TERM/30/KILL/5 --user clickhouse \
      --exec /usr/sbin/clickhouse-server >/dev/null 2>&1 || true
  fi
  echo "install-deps.sh: the system clickhouse-server service is disabled (tests run their own)"
done
