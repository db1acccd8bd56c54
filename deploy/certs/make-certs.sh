#!/usr/bin/env bash
# Development PKI for sockwatch mTLS (openssl): a CA, a collector certificate
# and one client certificate per agent host. An agent's certificate names its
# host id in the subject CN; the collector lets it write only as that host.
#
#   deploy/certs/make-certs.sh [--out DIR] [--collector-name NAME]... [--days N] HOST_ID...
#
# DIR (default ./sockwatch-certs) gets ca.pem, ca.key, collector.pem,
# collector.key and agents/HOST_ID.pem + .key. An existing CA in DIR is
# reused, so more hosts can be added later. The collector certificate is
# valid for localhost, 127.0.0.1, ::1 and every --collector-name (DNS name or
# IP). Keys are ECDSA P-256. For production, use your own CA.
set -euo pipefail

out=./sockwatch-certs
days=825
names=()
hosts=()
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --collector-name) names+=("${2:?--collector-name needs a name}"); shift 2 ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "make-certs.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) hosts+=("$1"); shift ;;
  esac
done
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
for h in "${hosts[@]}"; do
  # The host id becomes a file name and a CN: printable ASCII, no slash.
  if [[ ! "$h" =~ ^[A-Za-z0-9._:@-]{1,64}$ ]]; then
    echo "make-certs.sh: host id '$h': use 1-64 of A-Z a-z 0-9 . _ : @ -" >&2; exit 2
  fi
done

umask 077
mkdir -p "$out/agents"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -f "$out/ca.pem" ]]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/ca.key" -sha256 -days "$days" -subj "/O=sockwatch/CN=sockwatch dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  echo "made CA $out/ca.pem"
fi

# sign NAME KEY OUT SERIAL EXT...: a new key and a certificate for NAME signed
# by the CA, in one openssl run. Serial numbers are unique without a shared
# serial file (time + index), so hosts are signed in parallel.
sign() {
  local name=$1 key=$2 crt=$3 idx=$4
  shift 4
  local ext=()
  for e in "$@"; do ext+=(-addext "$e"); done
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$key" \
    -subj "/O=sockwatch/CN=$name" -CA "$out/ca.pem" -CAkey "$out/ca.key" -days "$days" -sha256 \
    -set_serial "0x$(date +%s%N)$(printf '%06d' "$idx")" "${ext[@]}" -out "$crt" 2>"$tmp/$idx.err" ||
    { echo "make-certs.sh: $name: $(cat "$tmp/$idx.err")" >&2; return 1; }
}

if [[ ! -f "$out/collector.pem" || ${#names[@]} -gt 0 ]]; then
  san="DNS:localhost,IP:127.0.0.1,IP:::1"
  for n in "${names[@]}"; do
    if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
  done
  sign sockwatch-collector "$out/collector.key" "$out/collector.pem" 0 "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" "subjectAltName=$san" ||
    exit 1
  echo "made collector certificate $out/collector.pem ($san)"
fi

jobs=0
for h in "${hosts[@]}"; do
  sign "$h" "$out/agents/$h.key" "$out/agents/$h.pem" $((++jobs)) "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" &
  if (( jobs % 8 == 0 )); then wait; fi
done
wait
for h in "${hosts[@]}"; do
  [[ -s "$out/agents/$h.pem" ]] || { echo "make-certs.sh: could not make the certificate of '$h'" >&2; exit 1; }
done
((${#hosts[@]})) && echo "made ${#hosts[@]} agent certificate(s) in $out/agents/"
exit 0
