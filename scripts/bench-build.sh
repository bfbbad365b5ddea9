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
# Then, per runtime stack (java, python, node), the same median for a typical
# app: a ~20 MB jar, a WSGI app with a vendored library, a Node app whose
# node_modules has ~1,000 files; the stacks are built first if the machine's
# stack cache lacks them (not timed), and each stack's build time from
# nothing and compressed size are printed (`dinp builder stacks --json`).
#
# Environment: BENCH_RUNS (5), BENCH_BLOB_MB (10), BENCH_STACKS ("java python node").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

RUNS=${BENCH_RUNS:-5}
STACKS=${BENCH_STACKS-java python node}
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
  case $stack in
    binary) cp "$WORK/app/hello" "$WORK/app/Procfile" "$dir/" ;;
    dockerfile) cp "$WORK/app/hello" "$WORK/app/Procfile" "$WORK/Dockerfile" "$dir/" ;;
    *) cp -r "$WORK/stackapp-$stack/." "$dir/" ;;
  esac
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

# Typical apps of the runtime stacks.
mkdir -p "$WORK/stackapp-java" "$WORK/stackapp-python/vendor/greeting" "$WORK/stackapp-node/node_modules"
head -c $((20 << 20)) /dev/urandom >"$WORK/blob20.bin"
(cd "$WORK" && python3 -m zipfile -c stackapp-java/app.jar blob20.bin)
printf 'def application(environ, start_response):\n    start_response("200 OK", [])\n    return [b"hi"]\n' >"$WORK/stackapp-python/wsgi.py"
for i in $(seq 1 20); do printf 'def f%d():\n    return %d\n' "$i" "$i" >"$WORK/stackapp-python/vendor/greeting/m$i.py"; done
printf '{"name":"b","scripts":{"start":"node server.js"}}\n' >"$WORK/stackapp-node/package.json"
printf 'require("http").createServer((q, r) => r.end("hi")).listen(process.env.PORT)\n' >"$WORK/stackapp-node/server.js"
for d in $(seq 1 100); do
  mkdir -p "$WORK/stackapp-node/node_modules/m$d/lib"
  printf '{"name":"m%d","main":"lib/f0.js"}\n' "$d" >"$WORK/stackapp-node/node_modules/m$d/package.json"
  for f in $(seq 0 8); do printf 'module.exports = %d;\n' "$f" >"$WORK/stackapp-node/node_modules/m$d/lib/f$f.js"; done
done
builder_stacks() { "$WORK/dinp" builder stacks --json --builder-url "http://$BUILDER" --data-dir "$DATA" --timeout 30m; }
for stack in $STACKS; do
  if ! builder_stacks | python3 -c "import json,sys; sys.exit(0 if any(s['name']=='$stack' and s.get('pushed') for s in json.load(sys.stdin)) else 1)"; then
    log "building stack $stack (not in the machine's stack cache yet)"
    "$WORK/dinp" builder stacks build "$stack" --builder-url "http://$BUILDER" --data-dir "$DATA" >/dev/null
  fi
  deploy_once "$stack" warmup >/dev/null # the first push of a stack's base blob is not an app deploy
  times=()
  for run in $(seq 1 "$RUNS"); do
    t=$(deploy_once "$stack" "$run")
    times+=("$t")
    log "$stack run $run: ${t} s"
  done
  RESULT[$stack]=$(printf '%s\n' "${times[@]}" | median)
done

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
if [ -n "$STACKS" ]; then
  echo
  echo "runtime stacks: median upload start to release recorded ($RUNS runs; target <= 0.5 s), stack build time from nothing, compressed size (targets: debian 40, python 60, node 70, java 120 MB)"
  for stack in $STACKS; do printf '%-7s app deploy median %.2f s\n' "$stack" "${RESULT[$stack]}"; done
  builder_stacks | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s.get("build_seconds"):
        print("%-7s stack %s: built in %.0f s, %.1f MB compressed, %d packages" % (s["name"], s["version"], s["build_seconds"], s["size_bytes"] / 1e6, len(s.get("packages") or [])))
'
fi
