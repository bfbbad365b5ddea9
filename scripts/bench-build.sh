#!/usr/bin/env bash
# bench-build.sh — deploy latency through the public API: upload start to
# release recorded (the answer of POST /api/v1/apps/{app}/deploy), for a
# binary-stack build and a Dockerfile build of the same ~10 MB static binary.
#
# Runs a private `dinp up` (own data dir, free ports, own MySQL database
# dinp_bench_build, own Redis key prefix, unique node id), creates an app with
# 0 instances (nothing to start: the figure is the build + release path),
# builds a Go program embedding 10 MB of random bytes (incompressible), and
# uploads it BENCH_RUNS times per stack. Each upload carries a different
# stamp file, so the builder's content-hash reuse never short-circuits.
# Everything it started is stopped and removed at exit.
#
# Environment: BENCH_RUNS (5), BENCH_BLOB_MB (10).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

RUNS=${BENCH_RUNS:-5}
BLOB_MB=${BENCH_BLOB_MB:-10}
DB=dinp_bench_build
PREFIX="dinp-bench-build-$$"
NODE="bench-build-$$"
APP=benchapp

apt_install curl ca-certificates
start_services

WORK=$(mktemp -d /tmp/dinp-bench-build.XXXXXX)
DATA=$WORK/data
PID=
mysql_q() { mysql -h127.0.0.1 -udinp -pdinp -N -e "$1"; }

cleanup() {
  set +e
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
  fi
  ids=$(docker ps -aq --filter "label=dinp.node=$NODE" 2>/dev/null)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
  fi
  mysql_q "DROP DATABASE IF EXISTS $DB" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# pick_ports sets DASH ROUTER ... to 127.0.0.1:<port> with ports nothing
# listens on, distinct, below the usual ephemeral range (a kernel-chosen
# port could be taken by an outgoing connection before dinp binds it).
pick_ports() {
  local v p picked=" "
  for v in DASH ROUTER ROUTER_STATUS SERVER AGENT BUILDER REGISTRY HM; do
    while :; do
      p=$((20000 + RANDOM % 12000))
      case $picked in *" $p "*) continue ;; esac
      python3 -c "import socket; socket.socket().bind(('127.0.0.1', $p))" 2>/dev/null && break
    done
    picked="$picked$p "
    printf -v "$v" '127.0.0.1:%s' "$p"
  done
}

log "building dinp"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/dinp" .)

log "building the app: a Go program embedding $BLOB_MB MB of random bytes"
mkdir -p "$WORK/app" "$WORK/src"
cp "$ROOT/scripts/examples/hello/main.go" "$WORK/src/"
head -c $((BLOB_MB << 20)) /dev/urandom >"$WORK/src/blob.bin"
cat >"$WORK/src/blob.go" <<'EOF'
package main

import _ "embed"

//go:embed blob.bin
var benchBlob []byte

func init() {
	if len(benchBlob) == 0 {
		panic("no blob")
	}
}
EOF
printf 'module benchapp\n\ngo 1.22\n' >"$WORK/src/go.mod"
(cd "$WORK/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$WORK/app/hello" .)
printf 'web: ./hello\n' >"$WORK/app/Procfile"
printf 'FROM scratch\nCOPY . /app\nUSER 65534:65534\nWORKDIR /app\nENV PORT=8080\nENTRYPOINT ["/app/hello"]\n' >"$WORK/Dockerfile"
log "app binary: $(du -h "$WORK/app/hello" | cut -f1)"

mysql_q "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
pick_ports
log "starting a private dinp up (data $DATA, dash $DASH)"
mkdir -p "$DATA"
"$WORK/dinp" up --data-dir "$DATA" --mysql-dsn "dinp:dinp@tcp(127.0.0.1:3306)/$DB" \
  --key-prefix "$PREFIX" --node-id "$NODE" --log-level warn \
  --dash-addr "$DASH" --router-addr "$ROUTER" --router-status-addr "$ROUTER_STATUS" \
  --server-addr "$SERVER" --agent-addr "$AGENT" --builder-addr "$BUILDER" \
  --registry-addr "$REGISTRY" --hm-addr "$HM" >"$WORK/dinp.log" 2>&1 &
PID=$!
ready() { kill -0 "$PID" && curl -fsS "http://$DASH/api/v1/health" >/dev/null && [ -s "$DATA/admin.json" ]; }
if ! wait_for 90 ready; then
  log "dinp did not become ready; last log lines:"; tail -n 30 "$WORK/dinp.log" >&2; exit 1
fi
TOKEN=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$DATA/admin.json" | head -n1)
api() { curl -sS -H "Authorization: Bearer $TOKEN" "$@"; }
api -fo /dev/null -X POST -H 'Content-Type: application/json' \
  -d "{\"name\":\"$APP\",\"instances\":0,\"memory_mb\":64}" "http://$DASH/api/v1/apps"

# deploy_once STACK RUN: upload a fresh tarball, print the seconds curl took
# from the start of the upload to the deploy answer.
deploy_once() {
  local stack=$1 run=$2 dir="$WORK/ctx-$1-$2" out code secs
  mkdir -p "$dir"
  cp "$WORK/app/hello" "$WORK/app/Procfile" "$dir/"
  [ "$stack" = dockerfile ] && cp "$WORK/Dockerfile" "$dir/"
  printf '%s %s %s\n' "$stack" "$run" "$(date +%s%N)" >"$dir/stamp.txt"
  tar -C "$dir" -czf "$dir.tar.gz" .
  out=$(api -o "$dir.json" -w '%{http_code} %{time_total}' -X POST -H 'Content-Type: application/gzip' \
    --data-binary @"$dir.tar.gz" "http://$DASH/api/v1/apps/$APP/deploy")
  code=${out% *} secs=${out#* }
  if [ "${code:0:1}" != 2 ]; then
    log "deploy ($stack, run $run) failed: HTTP $code $(cat "$dir.json")"; return 1
  fi
  grep -q "\"stack\": *\"$stack\"" "$dir.json" ||
    { log "deploy ($stack, run $run): unexpected answer $(cat "$dir.json")"; return 1; }
  rm -rf "$dir" "$dir.tar.gz"
  echo "$secs"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RESULT
for stack in binary dockerfile; do
  times=()
  for run in $(seq 1 "$RUNS"); do
    t=$(deploy_once "$stack" "$run")
    times+=("$t")
    log "$stack run $run: ${t} s"
  done
  RESULT[$stack]=$(printf '%s\n' "${times[@]}" | median)
done
size=$(stat -c %s "$WORK/app/hello")

echo
echo "per-step builder timings (ms) of these builds, from the builds table:"
mysql_q "SELECT CONCAT(stack, ' build ', id, ': ', timings_json) FROM $DB.builds ORDER BY id"
echo
printf 'app: %.1f MB static binary, %d runs per stack, upload start to release recorded (POST /api/v1/apps/{app}/deploy)\n' \
  "$(awk "BEGIN {print $size / 1000000}")" "$RUNS"
printf 'binary stack build:     median %.2f s (%d runs)\n' "${RESULT[binary]}" "$RUNS"
printf 'dockerfile stack build: median %.2f s (%d runs)\n' "${RESULT[dockerfile]}" "$RUNS"
if awk "BEGIN {exit !(${RESULT[binary]} <= 0.5)}"; then
  echo "target (binary stack median <= 0.5 s): met"
else
  echo "target (binary stack median <= 0.5 s): NOT met"
fi
