#!/usr/bin/env bash
# bench-syscalls.sh — system calls per proxied request of dinp's router (on
# its event loops, and with a goroutine per connection: --loops 0) and of
# HAProxy, all in front of the same light backend (nginx `return 200`, one
# worker) on 127.0.0.1: `perf stat -e raw_syscalls:sys_enter` on each proxy
# process while wrk (-t2 -c64, 4 s) loads it. A count, not a time, so it
# does not depend on how busy the machine is. ~30 s.
#
# Environment: BENCH_PORT (first of 6 ports, 19900).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"
apt_install wrk nginx-light haproxy redis-tools linux-perf
start_redis

PORT=${BENCH_PORT:-19900}
TMP=$(mktemp -d /tmp/dinp-bench-syscalls.XXXXXX)
PREFIX=dinpsc$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

nginx_conf "$TMP/backend" 1 "server { listen 127.0.0.1:$PORT;
    location / { default_type text/plain; return 200 \"hello, world\n\"; } }"
nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" & PIDS+=($!)
cat >"$TMP/haproxy.cfg" <<H
global
  nbthread $(nproc)
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$((PORT + 1))
  default_backend be
backend be
  server s1 127.0.0.1:$PORT
H
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 & PIDS+=($!)
HAPROXY_PID=$!
log "building (go build)"
(cd "$ROOT" && go build -o "$TMP/dinp" . && go build -o "$TMP/bench" ./router/bench)
"$TMP/bench" routes -prefix "$PREFIX" -host bench.apps.io -backend "127.0.0.1:$PORT"
router() { # router PORT STATUS_PORT EXTRA...
  "$TMP/dinp" router --addr "127.0.0.1:$1" --status-addr "127.0.0.1:$2" --key-prefix "$PREFIX" \
    --redis-addr 127.0.0.1:6379 --log-level warn --access-log=false "${@:3}" >>"$TMP/router.log" 2>&1 &
  PIDS+=($!)
}
router $((PORT + 2)) $((PORT + 3))
LOOPS_PID=$!
router $((PORT + 4)) $((PORT + 5)) --loops 0
GOROUTINE_PID=$!
answers() { curl -fs -H "Host: bench.apps.io" "http://127.0.0.1:$1/" >/dev/null; }
for p in $((PORT + 1)) $((PORT + 2)) $((PORT + 4)); do
  wait_for 20 answers "$p" || { log "port $p does not answer"; cat "$TMP/router.log" "$TMP/haproxy.log" >&2; exit 1; }
done

echo "== system calls per proxied request (wrk -t2 -c64 -d4s, light nginx backend)"
for t in "router $LOOPS_PID $((PORT + 2))" "router-goroutine $GOROUTINE_PID $((PORT + 4))" "haproxy $HAPROXY_PID $((PORT + 1))"; do
  read -r name pid port <<<"$t"
  perf stat -e raw_syscalls:sys_enter -p "$pid" -o "$TMP/perf-$name.txt" -- sleep 5 &
  perf_pid=$!
  sleep 0.3
  wrk -t2 -c64 -d4s -H "Host: bench.apps.io" "http://127.0.0.1:$port/" >"$TMP/wrk-$name.txt"
  wait "$perf_pid"
  n=$(awk '/requests in/ {print $1}' "$TMP/wrk-$name.txt")
  s=$(awk '/raw_syscalls/ {gsub(",", "", $1); print $1}' "$TMP/perf-$name.txt")
  printf '%-17s %9s requests %10s system calls %6.2f per request\n' "$name" "$n" "$s" "$(awk -v s="$s" -v n="$n" 'BEGIN {print s / n}')"
done
