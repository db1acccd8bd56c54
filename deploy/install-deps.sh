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
  # storage
  libsqlite3-dev sqlite3 libssl-dev
  # mTLS: development certificates (deploy/certs/make-certs.sh)
  openssl
  # detection: exceptions file (YAML) and its regexes
  libyaml-cpp-dev libre2-dev
  # tests and benchmarks (ip netns + veth; pkill; setpriv is in util-linux)
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 procps
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
