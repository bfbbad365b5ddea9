#!/usr/bin/env bash
# pki.sh DIR NAME [SAN...] — a private CA for TLS between dinp's machines,
# and one certificate per component, with openssl (Debian's).
#
#   scripts/pki.sh /etc/dinp/pki server 10.0.0.1 server1.internal
#   scripts/pki.sh /etc/dinp/pki registry registry.internal
#
# The first call creates the CA (DIR/ca.pem, DIR/ca-key.pem, kept 0600);
# each call then writes DIR/NAME.pem and DIR/NAME-key.pem, signed by it,
# valid for the SANs given (IP addresses or DNS names; default: this host's
# name, its address and 127.0.0.1). Start the listener with
# --tls-cert DIR/NAME.pem --tls-key DIR/NAME-key.pem and give every client
# --ca DIR/ca.pem (copy ca.pem, never ca-key.pem, to the other machines).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME [SAN...]" >&2; exit 2; }
DIR=$1 NAME=$2
shift 2
command -v openssl >/dev/null || { echo "pki.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || { echo "pki.sh: NAME must be [A-Za-z0-9._-]" >&2; exit 2; }
DAYS=${DINP_PKI_DAYS:-825}
mkdir -p "$DIR"
umask 077

if [ ! -s "$DIR/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=dinp private CA" -keyout "$DIR/ca-key.pem" -out "$DIR/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 0644 "$DIR/ca.pem"
  echo "pki.sh: created the CA $DIR/ca.pem" >&2
fi

if [ $# -eq 0 ]; then
  set -- "$(hostname)" 127.0.0.1
  addr=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' || true)
  [ -n "$addr" ] && set -- "$@" "$addr"
fi
sans=()
for s in "$@"; do
  if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then sans+=("IP:$s"); else sans+=("DNS:$s"); fi
done
san=$(IFS=,; echo "${sans[*]}")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$NAME" \
  -keyout "$DIR/$NAME-key.pem" -out "$tmp/req.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" >"$tmp/ext"
openssl x509 -req -in "$tmp/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" -CAcreateserial \
  -days "$DAYS" -extfile "$tmp/ext" -out "$DIR/$NAME.pem" 2>/dev/null
rm -f "$DIR/ca.srl"
chmod 0644 "$DIR/$NAME.pem"
echo "pki.sh: $DIR/$NAME.pem ($san)" >&2
