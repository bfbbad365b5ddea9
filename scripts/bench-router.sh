#!/usr/bin/env bash
# bench-router.sh — dinp's router against nginx and HAProxy, all on 127.0.0.1,
# in one run that stops by itself (~9 minutes).
#
# The backend is lighter than any proxy in front of it, so the proxies' own
# cost is what shows: nginx (Debian's nginx-light) with one worker answering
# `return 200` with a 13-byte body. It is reached directly, through
# `dinp router` (access log off, and "router-log" with it on), through nginx
# (2 workers = cores, upstream keepalive pool) and through HAProxy (2 threads,
# `http-reuse always`). wrk -t2 --latency at 64 and at 256 connections,
# rounds in alternation; the figures are the medians of the rounds. CPU
# µs/request is the CPU time (/proc/PID/stat, user+system, all threads) of
# the target's own processes over the requests it answered.
#
# Then an HTTP/2 round: h2load against the router's TLS listener and nginx's
# h2 listener, same certificate, same backend over HTTP/1.1. Then route-change
# propagation (1,000 changes written to Redis as the server writes them) and
# the router's RSS with 10,000 routes.
#
# Every proxy is configured alike: access log off, the forwarding headers
# the router sets (X-Forwarded-For/-Proto/-Host, X-Request-Id,
# X-Request-Start) set by nginx and HAProxy too, and no cap on requests per
# client connection. "router-log" writes its access log to a file (truncated
# after each round) to show what it costs. "router-1p" is the router with as
# many Go Ps as cores (--procs, instead of its default 4 x cores), to show
# which of the two the machine favours. "router-goroutine" is the router with
# a goroutine per connection (--loops 0) instead of its event loops.
#
# Environment: BENCH_DURATION (10s), BENCH_ROUNDS (3), BENCH_CONNS ("64 256"),
# BENCH_TARGETS ("direct router router-goroutine router-1p router-log nginx
# haproxy"; also router-nometrics), BENCH_H2 (1; 0 skips the h2 round), BENCH_H2_STREAMS
# (10 per connection), BENCH_CHANGES (1000; 0 skips), BENCH_ROUTES (10000),
# BENCH_PORT (first of 18 ports, 19100).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS_LIST=${BENCH_CONNS:-64 256}
TARGETS=${BENCH_TARGETS:-direct router router-goroutine router-1p router-log nginx haproxy}
H2=${BENCH_H2:-1}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
CHANGES=${BENCH_CHANGES:-1000}
NROUTES=${BENCH_ROUTES:-10000}
PORT=${BENCH_PORT:-19100}
BACKEND_PORT=$PORT NGINX_PORT=$((PORT + 1)) HAPROXY_PORT=$((PORT + 2))
ROUTER_PORT=$((PORT + 3)) ROUTER_STATUS=$((PORT + 4))
NOMETRICS_PORT=$((PORT + 5)) NOMETRICS_STATUS=$((PORT + 6))
LOG_PORT=$((PORT + 7)) LOG_STATUS=$((PORT + 8))
ROUTER_TLS=$((PORT + 9)) NGINX_TLS=$((PORT + 10))
ONEP_PORT=$((PORT + 14)) ONEP_STATUS=$((PORT + 15))
GOR_PORT=$((PORT + 16)) GOR_STATUS=$((PORT + 17))
HOST=bench.apps.io
PREFIX=dinpbench$$
CORES=$(nproc)

apt_install wrk nginx-light haproxy redis-tools openssl
[ "$H2" = 1 ] && apt_install nghttp2-client
start_redis

TMP=$(mktemp -d /tmp/dinp-bench-router.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

log "building (go build)"
(cd "$ROOT" && go build -o "$TMP/bench" ./router/bench)
if (cd "$ROOT" && go build -o "$TMP/dinp" . 2>"$TMP/build.err"); then
  ROUTER_CMD=("$TMP/dinp" router)
else
  # Another component may be mid-edit; the router code is the same.
  log "dinp does not build right now ($(head -1 "$TMP/build.err")); using router/bench's router command"
  ROUTER_CMD=("$TMP/bench" router)
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# One self-signed certificate for the router's and nginx's TLS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
  -addext "subjectAltName=DNS:$HOST" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

# The backend: nginx, one worker, a fixed 13-byte answer.
nginx_conf "$TMP/backend" 1 "server {
    listen 127.0.0.1:$BACKEND_PORT;
    location / { default_type text/plain; return 200 \"hello, world\n\"; }
  }"
nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" & PIDS+=($!)
BACKEND_PID=$!

PROXY_LOCATION="location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Request-Start \"\$msec\";
    }"
nginx_conf "$TMP/nginx" "$CORES" "upstream app {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    $PROXY_LOCATION
  }
  server {
    listen 127.0.0.1:$NGINX_TLS ssl http2;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    $PROXY_LOCATION
  }"
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" & PIDS+=($!)
NGINX_PID=$!

cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread $CORES
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  option forwardfor
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Start %[date(0,ms)]
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
EOF
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 & PIDS+=($!)
HAPROXY_PID=$!

start_router() { # start_router PORT STATUS_PORT LOGFILE EXTRA_FLAGS... ; sets ROUTER_PID
  "${ROUTER_CMD[@]}" --addr "127.0.0.1:$1" --status-addr "127.0.0.1:$2" --key-prefix "$PREFIX" \
    --redis-addr 127.0.0.1:6379 --log-level warn "${@:4}" \
    >>"$3" 2>&1 &
  ROUTER_PID=$!
  PIDS+=($ROUTER_PID)
}

"$TMP/bench" routes -prefix "$PREFIX" -host "$HOST" -backend "127.0.0.1:$BACKEND_PORT"
start_router "$ROUTER_PORT" "$ROUTER_STATUS" "$TMP/router.log" --access-log=false \
  --tls-addr "127.0.0.1:$ROUTER_TLS" --tls-cert "$TMP/cert.pem:$TMP/key.pem"
MAIN_ROUTER_PID=$ROUTER_PID
PORTS="$BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $ROUTER_PORT"
case " $TARGETS " in *" router-nometrics "*)
  start_router "$NOMETRICS_PORT" "$NOMETRICS_STATUS" "$TMP/router.log" --access-log=false --metrics=false
  NOMETRICS_PID=$ROUTER_PID PORTS="$PORTS $NOMETRICS_PORT" ;; esac
case " $TARGETS " in *" router-goroutine "*)
  start_router "$GOR_PORT" "$GOR_STATUS" "$TMP/router.log" --access-log=false --loops 0
  GOR_PID=$ROUTER_PID PORTS="$PORTS $GOR_PORT" ;; esac
case " $TARGETS " in *" router-1p "*)
  start_router "$ONEP_PORT" "$ONEP_STATUS" "$TMP/router.log" --access-log=false --procs "$CORES"
  ONEP_PID=$ROUTER_PID PORTS="$PORTS $ONEP_PORT" ;; esac
# The access log goes to its own file (stdout/stderr of that router).
ROUTER_LOG_SINK=$TMP/access.log
start_router "$LOG_PORT" "$LOG_STATUS" "$ROUTER_LOG_SINK" --access-log=true
LOG_PID=$ROUTER_PID PORTS="$PORTS $LOG_PORT"

for p in $PORTS; do
  wait_for 20 port_open "$p" || { log "port $p did not open"; cat "$TMP/router.log" "$TMP/haproxy.log" >&2; exit 1; }
done
wait_for 20 curl -fs "http://127.0.0.1:$ROUTER_STATUS/health" || { log "router not ready"; cat "$TMP/router.log" >&2; exit 1; }
for p in $PORTS; do
  out=$(curl -fs -H "Host: $HOST" "http://127.0.0.1:$p/") || { log "no answer on port $p"; exit 1; }
  [ "$out" = "hello, world" ] || { log "port $p answered $out"; exit 1; }
done
if [ "$H2" = 1 ]; then
  for p in $ROUTER_TLS $NGINX_TLS; do
    v=$(curl -fsk --http2 -o /dev/null -w '%{http_version}' --resolve "$HOST:$p:127.0.0.1" "https://$HOST:$p/") ||
      { log "no h2 answer on port $p"; exit 1; }
    [ "$v" = 2 ] || { log "port $p answered over HTTP/$v, not h2"; exit 1; }
  done
fi
: >"$ROUTER_LOG_SINK"

target_port() {
  case $1 in
    direct) echo "$BACKEND_PORT" ;; router) echo "$ROUTER_PORT" ;; router-nometrics) echo "$NOMETRICS_PORT" ;; router-1p) echo "$ONEP_PORT" ;;
    router-goroutine) echo "$GOR_PORT" ;; router-log) echo "$LOG_PORT" ;; nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;;
    router-h2) echo "$ROUTER_TLS" ;; nginx-h2) echo "$NGINX_TLS" ;;
    *) log "unknown target $1"; exit 1 ;;
  esac
}

target_pids() { # the processes doing the target's work (nginx: master and workers)
  case $1 in
    direct) echo "$BACKEND_PID" $(pgrep -P "$BACKEND_PID") ;; router | router-h2) echo "$MAIN_ROUTER_PID" ;;
    router-nometrics) echo "$NOMETRICS_PID" ;; router-1p) echo "$ONEP_PID" ;; router-log) echo "$LOG_PID" ;;
    router-goroutine) echo "$GOR_PID" ;;
    nginx | nginx-h2) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID") ;; haproxy) echo "$HAPROXY_PID" ;;
  esac
}
# cpu_ticks PID... — user+system CPU ticks of the processes (all threads).
cpu_ticks() { for p in "$@"; do awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
CLK_TCK=$(getconf CLK_TCK)

# run_round TARGET CONNS ROUND — one wrk (or h2load) run; keeps its output and CPU ticks.
run_round() {
  local t=$1 c=$2 round=$3 pids before f=$TMP/out-$1-$2-$3.txt
  pids=$(target_pids "$t")
  # shellcheck disable=SC2086
  before=$(cpu_ticks $pids)
  case $t in
    *-h2) h2load -c "$c" -m "$H2_STREAMS" -t2 -D "${DURATION%s}" --warm-up-time=1 \
            --connect-to "127.0.0.1:$(target_port "$t")" "https://$HOST:$(target_port "$t")/" >"$f" ;;
    *) wrk -t2 -c"$c" -d"$DURATION" --latency -H "Host: $HOST" "http://127.0.0.1:$(target_port "$t")/" >"$f" ;;
  esac
  # shellcheck disable=SC2086
  echo $(( $(cpu_ticks $pids) - before )) >"$TMP/cpu-$t-$c-$round.txt"
  # The access-log router writes to a file that would fill the disk.
  [ "$t" = router-log ] && : >"$ROUTER_LOG_SINK"
  printf '  %3s conns round %s %-17s %s req/s\n' "$c" "$round" "$t" "$(fig1 "$t" "$c" "$round" rps)" >&2
}

# to_ms VALUE-WITH-UNIT
to_ms() { awk -v v="$1" 'BEGIN {
  if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
  else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
fig1() { # fig1 TARGET CONNS ROUND FIELD(rps|p50|p99|mean|cpu) — one round's figure
  local f=$TMP/out-$1-$2-$3.txt n
  case $4 in
    rps) awk '/^Requests\/sec/ {print $2} /^finished in/ {sub(/,/, "", $4); print $4}' "$f" ;;
    p50) to_ms "$(awk '$1 == "50%" {print $2}' "$f")" ;;
    p99) to_ms "$(awk '$1 == "99%" {print $2}' "$f")" ;;
    mean) to_ms "$(awk '/^time for request:/ {print $6}' "$f")" ;; # h2load: mean time per request
    cpu) # microseconds of the target's CPU per request
      n=$(awk '/requests in/ {print $1} /^requests:/ {print $8}' "$f")
      awk -v t="$(cat "$TMP/cpu-$1-$2-$3.txt")" -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.1f\n", t / hz * 1e6 / n}' ;;
  esac
}
fig() { for round in $(seq "$ROUNDS"); do fig1 "$1" "$2" "$round" "$3"; done | median; }
errors() { cat "$TMP"/out-"$1"-"$2"-*.txt | awk '/Non-2xx|Socket errors|[1-9][0-9]* failed/ {print}' | head -2 | tr '\n' ' '; }

for c in $CONNS_LIST; do
  log "wrk -t2 -c$c -d$DURATION --latency, $ROUNDS rounds of: $TARGETS"
  for round in $(seq "$ROUNDS"); do
    for t in $TARGETS; do run_round "$t" "$c" "$round"; done
  done
done
H2_TARGETS="router-h2 nginx-h2"
H2_CONNS=64
if [ "$H2" = 1 ]; then
  log "h2load -c$H2_CONNS -m$H2_STREAMS -t2 -D ${DURATION%s}, $ROUNDS rounds of: $H2_TARGETS"
  for round in $(seq "$ROUNDS"); do
    for t in $H2_TARGETS; do run_round "$t" "$H2_CONNS" "$round"; done
  done
fi

echo
echo "== throughput: median of $ROUNDS alternating rounds of $DURATION; $CORES cores shared by the load generator,"
echo "   the backend (nginx, 1 worker) and the proxy; other work on this machine shares them too"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
best_other() { # best_other CONNS — the faster of nginx and HAProxy
  local n h
  n=$(fig nginx "$1" rps) h=$(fig haproxy "$1" rps)
  awk -v n="$n" -v h="$h" 'BEGIN {if (n >= h) print "nginx"; else print "haproxy"}'
}
for c in $CONNS_LIST; do
  echo
  echo "-- wrk -t2 -c$c --latency"
  printf '%-17s %12s %10s %10s %12s\n' target "requests/s" "p50 ms" "p99 ms" "CPU us/req"
  for t in $TARGETS; do
    printf '%-17s %12.0f %10.3f %10.3f %12.1f  %s\n' "$t" "$(fig "$t" "$c" rps)" "$(fig "$t" "$c" p50)" \
      "$(fig "$t" "$c" p99)" "$(fig "$t" "$c" cpu)" "$(errors "$t" "$c")"
  done
done
echo "(CPU us/req: CPU time of that target's own processes per request — the backend's for direct —"
echo " which, unlike requests/s, does not depend on how much of the shared cores the others took)"
if [ "$H2" = 1 ]; then
  echo
  echo "-- HTTP/2 over TLS: h2load -c$H2_CONNS -m$H2_STREAMS -t2 (same certificate; backend over HTTP/1.1)"
  printf '%-17s %12s %10s %12s\n' target "requests/s" "mean ms" "CPU us/req"
  for t in $H2_TARGETS; do
    printf '%-17s %12.0f %10.3f %12.1f  %s\n' "$t" "$(fig "$t" $H2_CONNS rps)" "$(fig "$t" $H2_CONNS mean)" \
      "$(fig "$t" $H2_CONNS cpu)" "$(errors "$t" $H2_CONNS)"
  done
  echo "router-h2/nginx-h2 requests/s: $(ratio "$(fig router-h2 $H2_CONNS rps)" "$(fig nginx-h2 $H2_CONNS rps)")"
fi

if [ "$CHANGES" -gt 0 ]; then
  echo
  echo "== route changes (HSET+PUBLISH, polled through the router's main port)"
  printf '1 route:        '
  "$TMP/bench" propagation -prefix "$PREFIX" -n "$CHANGES" -router "127.0.0.1:$ROUTER_PORT"
  rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$MAIN_ROUTER_PID/status"; }
  rss_before=$(rss)
  "$TMP/bench" routes -prefix "$PREFIX" -n "$NROUTES" -backend "127.0.0.1:$BACKEND_PORT"
  routes_loaded() {
    n=$(curl -fs "http://127.0.0.1:$ROUTER_STATUS/metrics" | awk '$1 == "dinp_router_routes" {print int($2)}')
    [ "${n:-0}" -ge "$NROUTES" ]
  }
  wait_for 30 routes_loaded || { log "router did not load $NROUTES routes"; exit 1; }
  printf '%s routes:  ' "$(curl -fs "http://127.0.0.1:$ROUTER_STATUS/metrics" | awk '$1 == "dinp_router_routes" {print int($2)}')"
  "$TMP/bench" propagation -prefix "$PREFIX" -n "$CHANGES" -router "127.0.0.1:$ROUTER_PORT"
  echo
  echo "== router memory: RSS $rss_before after the throughput runs (few routes), $(rss) with $NROUTES more routes"
fi

echo
dropped=$(curl -fs "http://127.0.0.1:$LOG_STATUS/metrics" | awk '$1 == "dinp_router_access_log_dropped_total" {print int($2)}')
for c in $CONNS_LIST; do
  case " $TARGETS " in *" router-log "*)
    echo "access log cost at $c conns: requests/s router-log/router $(ratio "$(fig router-log "$c" rps)" "$(fig router "$c" rps)"),"\
      "CPU us/req router-log/router $(ratio "$(fig router-log "$c" cpu)" "$(fig router "$c" cpu)") (lines dropped in all: ${dropped:-?})" ;;
  esac
done
has_target() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
if has_target router && has_target nginx && has_target haproxy; then
  for c in $CONNS_LIST; do
    b=$(best_other "$c")
    echo "== $c conns: router / best of nginx and HAProxy ($b) requests/s: $(ratio "$(fig router "$c" rps)" "$(fig "$b" "$c" rps)")" \
      "  (p99 router $(fig router "$c" p99) ms, $b $(fig "$b" "$c" p99) ms;" \
      "requests per CPU-second router/$b $(ratio "$(fig "$b" "$c" cpu)" "$(fig router "$c" cpu)"))"
  done
fi
if has_target router-1p && has_target nginx && has_target haproxy; then
  for c in $CONNS_LIST; do
    b=$(best_other "$c")
    echo "   $c conns, router-1p (--procs $CORES): / $b requests/s $(ratio "$(fig router-1p "$c" rps)" "$(fig "$b" "$c" rps)")," \
      "p99 $(fig router-1p "$c" p99) ms, requests per CPU-second router-1p/$b $(ratio "$(fig "$b" "$c" cpu)" "$(fig router-1p "$c" cpu)")"
  done
fi
