#!/usr/bin/env bash
# bench-router.sh — dinp's router against nginx and HAProxy, all on 127.0.0.1,
# in one run that stops by itself (~5 minutes).
#
# The same tiny backend (router/bench: a fixed 13-byte body, keep-alive) is
# reached directly, through `dinp router`, through nginx (nginx-light,
# upstream keepalive pool) and through HAProxy (http mode, keep-alive to the
# server). wrk: -t2 -c64 -d10s --latency, rounds in alternation; the figures
# are the median of the rounds. Then: route-change propagation (1,000 changes
# written to Redis as the server writes them, timed until the router answers
# from the new backend) and the router's RSS with 10,000 routes.
#
# Every proxy is configured alike: access log off, workers = cores, the
# forwarding headers the router sets (X-Forwarded-For/-Proto/-Host,
# X-Request-Id, X-Request-Start) set by nginx and HAProxy too, and no cap on
# requests per client connection (nginx's default keepalive_requests 1000
# would make wrk reconnect; the router has no such cap). "router-nometrics"
# is the router with --metrics=false, to show what metrics cost. The router's
# access log is on by default (operators need it); it is off here like
# nginx's, and "router-log" shows its cost.
#
# Each proxy runs as it ships: nginx and HAProxy with workers/threads =
# cores, the router with its default --procs (GOMAXPROCS = 4 × cores; see
# router.Config.ApplyProcs). nginx with 4 workers measured no faster here.
#
# Environment: BENCH_DURATION (10s), BENCH_ROUNDS (3), BENCH_CONNS (64),
# BENCH_TARGETS ("direct router router-nometrics router-log nginx haproxy";
# router-log is the router with its access log on), BENCH_CHANGES (1000),
# BENCH_ROUTES (10000), BENCH_PORT (first of 8 ports, 19100).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-64}
TARGETS=${BENCH_TARGETS:-direct router router-nometrics router-log nginx haproxy}
CHANGES=${BENCH_CHANGES:-1000}
NROUTES=${BENCH_ROUTES:-10000}
PORT=${BENCH_PORT:-19100}
BACKEND_PORT=$PORT NGINX_PORT=$((PORT + 1)) HAPROXY_PORT=$((PORT + 2))
ROUTER_PORT=$((PORT + 3)) ROUTER_STATUS=$((PORT + 4))
NOMETRICS_PORT=$((PORT + 5)) NOMETRICS_STATUS=$((PORT + 6))
LOG_PORT=$((PORT + 7)) LOG_STATUS=$((PORT + 8))
HOST=bench.apps.io
PREFIX=dinpbench$$
CORES=$(nproc)

apt_install wrk nginx-light haproxy redis-tools
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

"$TMP/bench" backend -addr "127.0.0.1:$BACKEND_PORT" & PIDS+=($!)
BACKEND_PID=$!

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $CORES;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Request-Start "\$msec";
    }
  }
}
EOF
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

start_router() { # start_router PORT STATUS_PORT EXTRA_FLAGS... ; sets ROUTER_PID
  "${ROUTER_CMD[@]}" --addr "127.0.0.1:$1" --status-addr "127.0.0.1:$2" --key-prefix "$PREFIX" \
    --redis-addr 127.0.0.1:6379 --log-level warn "${@:3}" \
    >>"$TMP/router.log" 2>&1 &
  ROUTER_PID=$!
  PIDS+=($ROUTER_PID)
}

"$TMP/bench" routes -prefix "$PREFIX" -host "$HOST" -backend "127.0.0.1:$BACKEND_PORT"
start_router "$ROUTER_PORT" "$ROUTER_STATUS" --access-log=false
MAIN_ROUTER_PID=$ROUTER_PID
start_router "$NOMETRICS_PORT" "$NOMETRICS_STATUS" --access-log=false --metrics=false
NOMETRICS_PID=$ROUTER_PID
start_router "$LOG_PORT" "$LOG_STATUS" --access-log=true
LOG_PID=$ROUTER_PID
ROUTER_LOG_SINK=$TMP/router.log

for p in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $ROUTER_PORT $NOMETRICS_PORT $LOG_PORT; do
  wait_for 20 port_open "$p" || { log "port $p did not open"; cat "$TMP/router.log" "$TMP/haproxy.log" >&2; exit 1; }
done
wait_for 20 curl -fs "http://127.0.0.1:$ROUTER_STATUS/health" || { log "router not ready"; cat "$TMP/router.log" >&2; exit 1; }
for p in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $ROUTER_PORT $NOMETRICS_PORT $LOG_PORT; do
  out=$(curl -fs -H "Host: $HOST" "http://127.0.0.1:$p/") || { log "no answer on port $p"; exit 1; }
  [ "$out" = "hello, world" ] || { log "port $p answered $out"; exit 1; }
done

target_port() {
  case $1 in
    direct) echo "$BACKEND_PORT" ;; router) echo "$ROUTER_PORT" ;; router-nometrics) echo "$NOMETRICS_PORT" ;;
    router-log) echo "$LOG_PORT" ;; nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;;
    *) log "unknown target $1"; exit 1 ;;
  esac
}

target_pids() { # the processes doing the target's work (nginx: master and workers)
  case $1 in
    direct) echo "$BACKEND_PID" ;; router) echo "$MAIN_ROUTER_PID" ;; router-nometrics) echo "$NOMETRICS_PID" ;;
    router-log) echo "$LOG_PID" ;; nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID") ;; haproxy) echo "$HAPROXY_PID" ;;
  esac
}
# cpu_ticks PID... — user+system CPU ticks of the processes (all threads).
cpu_ticks() { for p in "$@"; do awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
CLK_TCK=$(getconf CLK_TCK)

log "wrk -t2 -c$CONNS -d$DURATION --latency, $ROUNDS rounds of: $TARGETS"
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    pids=$(target_pids "$t")
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "http://127.0.0.1:$(target_port "$t")/" \
      >"$TMP/wrk-$t-$round.txt"
    # shellcheck disable=SC2086
    echo $(( $(cpu_ticks $pids) - before )) >"$TMP/cpu-$t-$round.txt"
    # The access-log router writes to a file that would fill the disk.
    [ "$t" = router-log ] && : >"$ROUTER_LOG_SINK"
    printf '  round %s %-17s %s req/s\n' "$round" "$t" "$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk-$t-$round.txt")" >&2
  done
done

# to_ms VALUE-WITH-UNIT
to_ms() { awk -v v="$1" 'BEGIN {
  if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
  else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
fig() { # fig TARGET FIELD(rps|p50|p99)
  for round in $(seq "$ROUNDS"); do
    f=$TMP/wrk-$1-$round.txt
    case $2 in
      rps) awk '/^Requests\/sec/ {print $2}' "$f" ;;
      p50) to_ms "$(awk '$1 == "50%" {print $2}' "$f")" ;;
      p99) to_ms "$(awk '$1 == "99%" {print $2}' "$f")" ;;
      cpu) # microseconds of the target's CPU per request
        awk -v t="$(cat "$TMP/cpu-$1-$round.txt")" -v hz="$CLK_TCK" '/requests in/ {printf "%.1f\n", t / hz * 1e6 / $1}' "$f" ;;
    esac
  done | median
}
errors() { cat "$TMP"/wrk-"$1"-*.txt | awk '/Non-2xx|Socket errors/ {print}' | head -2 | tr '\n' ' '; }

echo
echo "== throughput: wrk -t2 -c$CONNS -d$DURATION --latency, median of $ROUNDS rounds, $CORES cores shared by wrk, backend and proxy"
printf '%-17s %12s %10s %10s %12s\n' target "requests/s" "p50 ms" "p99 ms" "CPU us/req"
for t in $TARGETS; do
  printf '%-17s %12.0f %10.3f %10.3f %12.1f  %s\n' "$t" "$(fig "$t" rps)" "$(fig "$t" p50)" "$(fig "$t" p99)" "$(fig "$t" cpu)" "$(errors "$t")"
done
echo "(CPU us/req: CPU time of that target's own processes per request — the backend's for direct —"
echo " which, unlike requests/s, does not depend on how much of the shared cores the others took)"
ratio() { awk -v a="$(fig "$1" rps)" -v b="$(fig "$2" rps)" 'BEGIN {printf "%.2f", a / b}'; }
case " $TARGETS " in *" router-nometrics "*) case " $TARGETS " in *" router "*)
  echo "metrics cost: router/router-nometrics requests/s = $(ratio router router-nometrics)" ;; esac ;; esac

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
sleep 1
echo
echo "== router memory: RSS $rss_before after the throughput runs (few routes), $(rss) with $NROUTES more routes"

echo
cpu_ratio() { awk -v a="$(fig "$1" cpu)" -v b="$(fig "$2" cpu)" 'BEGIN {printf "%.2f", b / a}'; }
echo "== router/nginx requests/s: $(ratio router nginx)   (router p99 $(fig router p99) ms, nginx p99 $(fig nginx p99) ms;"
echo "   requests per CPU-second router/nginx: $(cpu_ratio router nginx), router/haproxy: $(cpu_ratio router haproxy))"
