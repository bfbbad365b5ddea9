#!/usr/bin/env bash
# bench-up.sh — requests/s of an app served by `dinp up` on one machine, in
# one run that stops by itself (~4 minutes).
#
# It starts its own `dinp up` (own database, Redis prefix, node id, data dir
# and ports; nothing of a running installation is touched), deploys the
# example app `hello` with 3 instances, and measures with wrk (-t2 -c64
# keep-alive, rounds in alternation, median of the rounds):
#
#   router            wrk → `dinp up`'s router → the 3 instances. The router
#                     runs on the agent's node, so it dials each instance at
#                     its container address (README: "Which address a router
#                     dials").
#   router-local      wrk → a separate `dinp router --node-id <the node>` →
#                     the instances' container addresses (the same path as
#                     `router`, in a process of its own).
#   router-published  wrk → a `dinp router` on no node (--node-id unset) →
#                     the same instances at their published ports, through
#                     the engine's port proxy: the path before node-local
#                     addresses, and that of a router on another machine.
#                     router-local/router-published isolates what the
#                     node-local path gains with everything else equal.
#   nginx             wrk → nginx (workers = cores, keepalive upstream) →
#                     the 3 published ports.
#   direct            wrk → one instance's container address (no proxy): the
#                     ceiling.
#
# Target (issue 19): router ≥ 2 × nginx through the published ports.
#
# On a shared machine requests/s mostly tells how much CPU the path got from
# the scheduler; the CPU column does not: the CPU time per request of every
# process on the path — wrk, the proxy (for `router`, the whole `dinp up`
# process), the engine's port proxies it goes through (docker-proxy of the
# published ports) and the app instances — read from /proc around each run.
# 1e6 / that figure is the requests/s the path would make of one dedicated
# core, and the ratio of two paths' figures is their throughput ratio on an
# idle machine.
#
# `dinp up` runs as it ships except for its log level: warn, as nginx runs
# with access_log off (at info, the router's access log goes to the log
# file; BENCH_LOG_LEVEL=info measures that).
#
# Environment: BENCH_DURATION (8s), BENCH_ROUNDS (3), BENCH_CONNS (64),
# BENCH_TARGETS ("router router-local router-published nginx direct"),
# BENCH_PORT (first of 13 ports, 19300), BENCH_LOG_LEVEL (warn).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

DURATION=${BENCH_DURATION:-8s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-64}
TARGETS=${BENCH_TARGETS:-router router-local router-published nginx direct}
PORT=${BENCH_PORT:-19300}
LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
DASH=127.0.0.1:$PORT ROUTER=127.0.0.1:$((PORT + 1)) ROUTER_STATUS=127.0.0.1:$((PORT + 2))
PUB_ROUTER=127.0.0.1:$((PORT + 3)) PUB_STATUS=127.0.0.1:$((PORT + 4)) NGINX=127.0.0.1:$((PORT + 5))
REGISTRY=127.0.0.1:$((PORT + 6)) BUILDER=127.0.0.1:$((PORT + 7)) SERVER=127.0.0.1:$((PORT + 8))
AGENT=127.0.0.1:$((PORT + 9)) HM=127.0.0.1:$((PORT + 10))
LOCAL_ROUTER=127.0.0.1:$((PORT + 11)) LOCAL_STATUS=127.0.0.1:$((PORT + 12))
APP=hello DOMAIN=apps.io HOST=hello.apps.io
ID=benchup$$
NODE=$ID DB=$ID PREFIX=$ID
CORES=$(nproc)

apt_install wrk nginx-light curl
start_services

TMP=$(mktemp -d /tmp/dinp-bench-up.XXXXXX)
PIDS=()
UP_PID=
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$UP_PID" ]; then
    kill -TERM "$UP_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$UP_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  ids=$(docker ps -aq --filter "label=dinp.node=$NODE")
  imgs=$(for c in $ids; do docker inspect -f '{{.Config.Image}}' "$c"; done | sort -u)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  [ -n "$imgs" ] && docker rmi $imgs >/dev/null 2>&1
  # The app's network outlives its containers (the agent never removes what
  # may still serve); the engine refuses to remove it while anything uses it.
  docker network rm "dinp-app-$APP" >/dev/null 2>&1
  mysql --protocol=socket -uroot -e "DROP DATABASE IF EXISTS \`$DB\`" 2>/dev/null
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

log "building dinp and the example app"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$TMP/dinp" .)
mkdir -p "$TMP/app" "$TMP/data"
(cd "$ROOT/scripts/examples/hello" && CGO_ENABLED=0 go build -trimpath -o "$TMP/app/hello" . && cp Procfile "$TMP/app/")
tar -C "$TMP/app" -czf "$TMP/hello.tar.gz" hello Procfile

mysql --protocol=socket -uroot -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4"
log "starting dinp up (node $NODE, log $TMP/up.log)"
"$TMP/dinp" up --data-dir "$TMP/data" --mysql-dsn "dinp:dinp@tcp(127.0.0.1:3306)/$DB" --key-prefix "$PREFIX" \
  --node-id "$NODE" --domain "$DOMAIN" --log-level "$LOG_LEVEL" \
  --dash-addr "$DASH" --router-addr "$ROUTER" --router-status-addr "$ROUTER_STATUS" --registry-addr "$REGISTRY" \
  --builder-addr "$BUILDER" --server-addr "$SERVER" --agent-addr "$AGENT" --hm-addr "$HM" \
  >"$TMP/up.log" 2>&1 &
UP_PID=$!
ready() { kill -0 "$UP_PID" && curl -fsS "http://$DASH/api/v1/health" && curl -fsS "http://$ROUTER_STATUS/health"; } >/dev/null 2>&1
wait_for 120 ready || { log "dinp up did not become ready"; tail -n 30 "$TMP/up.log" >&2; exit 1; }
wait_for 20 test -s "$TMP/data/admin.json" || { log "no admin.json"; exit 1; }
TOKEN=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$TMP/data/admin.json" | head -n1)
api() { curl -fsS -H "Authorization: Bearer $TOKEN" "$@"; }

# The instances get the engine's default CPU weight (1024 shares, as wrk, nginx and the router have): with
# the platform's default of 256 the app, not the proxy, is what 2 shared cores starve first, and the
# figure would measure the backend.
log "deploying $APP with 3 instances"
api -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d "{\"name\":\"$APP\",\"instances\":3,\"memory_mb\":64,\"cpu_shares\":1024,\"health_path\":\"/healthz\"}" "http://$DASH/api/v1/apps"
api -o /dev/null -X POST -H 'Content-Type: application/gzip' --data-binary @"$TMP/hello.tar.gz" \
  "http://$DASH/api/v1/apps/$APP/deploy"
serving() { # 3 healthy instances, each answering through the router
  [ "$(api "http://$DASH/api/v1/apps/$APP" | grep -o '"health": *"healthy"' | wc -l)" -ge 3 ] || return 1
  [ "$(for _ in $(seq 30); do curl -fsS -H "Host: $HOST" "http://$ROUTER/" 2>/dev/null; done |
    sed -n 's/.*instance=\([0-9a-f]*\).*/\1/p' | sort -u | wc -l)" -ge 3 ]
}
wait_for 180 serving || { log "$APP did not come up"; tail -n 30 "$TMP/up.log" >&2; exit 1; }

# The instances' two addresses, as the engine shows them.
PUBLISHED=() LOCAL=() APP_PIDS=()
for c in $(docker ps -q --filter "label=dinp.node=$NODE" --filter "label=dinp.app=$APP"); do
  PUBLISHED+=("$(docker port "$c" 8080/tcp | head -n1)")
  APP_PIDS+=("$(docker inspect -f '{{.State.Pid}}' "$c")")
  LOCAL+=("$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{if $v.IPAddress}}{{$v.IPAddress}} {{end}}{{end}}' "$c" | awk '{print $1}'):8080")
done
[ "${#PUBLISHED[@]}" = 3 ] || { log "want 3 containers, found ${#PUBLISHED[@]}"; exit 1; }
log "instances: published ${PUBLISHED[*]}; node-local ${LOCAL[*]}"

PROXY_PIDS=() # the engine's port proxies of the published ports
for a in "${PUBLISHED[@]}"; do
  PROXY_PIDS+=($(ps -eo pid,args | awk -v p="${a##*:}" '$2 ~ /docker-proxy$/ && / -host-port / {for (i = 3; i <= NF; i++) if ($i == "-host-port" && $(i + 1) == p) print $1}'))
done
"$TMP/dinp" router --addr "$PUB_ROUTER" --status-addr "$PUB_STATUS" --key-prefix "$PREFIX" \
  --redis-addr 127.0.0.1:6379 --domain "$DOMAIN" --log-level warn >"$TMP/router-published.log" 2>&1 &
PIDS+=($!)
PUB_PID=$!
"$TMP/dinp" router --addr "$LOCAL_ROUTER" --status-addr "$LOCAL_STATUS" --key-prefix "$PREFIX" --node-id "$NODE" \
  --redis-addr 127.0.0.1:6379 --domain "$DOMAIN" --log-level warn >"$TMP/router-local.log" 2>&1 &
PIDS+=($!)
LOCAL_PID=$!

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
$(for a in "${PUBLISHED[@]}"; do echo "    server $a;"; done)
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen $NGINX;
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

target_url() {
  case $1 in
    router) echo "http://$ROUTER/" ;; router-local) echo "http://$LOCAL_ROUTER/" ;;
    router-published) echo "http://$PUB_ROUTER/" ;;
    nginx) echo "http://$NGINX/" ;; direct) echo "http://${LOCAL[0]}/" ;;
    *) log "unknown target $1"; exit 1 ;;
  esac
}
answers() { curl -fsS -H "Host: $HOST" "$(target_url "$1")" 2>/dev/null | grep -q "from app=$APP"; }
for t in $TARGETS; do
  wait_for 20 answers "$t" || { log "$t does not answer"; cat "$TMP"/*.log "$TMP/nginx/error.log" >&2; exit 1; }
done

path_pids() { # the processes a target's requests go through (besides wrk)
  case $1 in
    router) echo "$UP_PID" "${APP_PIDS[@]}" ;;
    router-local) echo "$LOCAL_PID" "${APP_PIDS[@]}" ;;
    router-published) echo "$PUB_PID" "${PROXY_PIDS[@]}" "${APP_PIDS[@]}" ;;
    nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID") "${PROXY_PIDS[@]}" "${APP_PIDS[@]}" ;;
    direct) echo "${APP_PIDS[0]}" ;;
  esac
}
# cpu_ticks PID... — user+system CPU ticks of the processes (all threads).
cpu_ticks() { for p in "$@"; do awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
CLK_TCK=$(getconf CLK_TCK)

log "wrk -t2 -c$CONNS -d$DURATION --latency, $ROUNDS rounds of: $TARGETS"
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    pids=$(path_pids "$t")
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    app_before=$(cpu_ticks ${APP_PIDS[*]}) dp_before=$(cpu_ticks ${PROXY_PIDS[*]})
    TIMEFORMAT='%U %S'
    { time wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "$(target_url "$t")" >"$TMP/wrk-$t-$round.txt"; } 2>"$TMP/wrkcpu-$t-$round.txt"
    # shellcheck disable=SC2086
    echo $(( $(cpu_ticks $pids) - before )) >"$TMP/cpu-$t-$round.txt"
    # The parts: the app instances, the engine's port proxies (on the paths through them), the proxy.
    # shellcheck disable=SC2086
    apps=$(( $(cpu_ticks ${APP_PIDS[*]}) - app_before )) dp=0
    case $t in router-published | nginx) dp=$(( $(cpu_ticks ${PROXY_PIDS[*]}) - dp_before )) ;; esac
    [ "$t" = direct ] && apps=$(cat "$TMP/cpu-$t-$round.txt")
    echo "$apps $dp $(( $(cat "$TMP/cpu-$t-$round.txt") - apps - dp ))" >"$TMP/cpusplit-$t-$round.txt"
    printf '  round %s %-17s %s req/s\n' "$round" "$t" "$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk-$t-$round.txt")" >&2
  done
done

to_ms() { awk -v v="$1" 'BEGIN {
  if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
  else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
fig() { # fig TARGET rps|p50|p99
  for round in $(seq "$ROUNDS"); do
    f=$TMP/wrk-$1-$round.txt
    case $2 in
      rps) awk '/^Requests\/sec/ {print $2}' "$f" ;;
      p50) to_ms "$(awk '$1 == "50%" {print $2}' "$f")" ;;
      p99) to_ms "$(awk '$1 == "99%" {print $2}' "$f")" ;;
      cpu) # microseconds of CPU per request: wrk plus the path's processes
        awk -v t="$(cat "$TMP/cpu-$1-$round.txt")" -v hz="$CLK_TCK" -v w="$(awk '{print $1 + $2}' "$TMP/wrkcpu-$1-$round.txt")" \
          '/requests in/ {printf "%.1f\n", (t / hz + w) * 1e6 / $1}' "$f" ;;
      wrk) awk -v w="$(awk '{print $1 + $2}' "$TMP/wrkcpu-$1-$round.txt")" '/requests in/ {printf "%.1f\n", w * 1e6 / $1}' "$f" ;;
      apps | dproxy | proxy) # one part of the path's CPU (see the run loop)
        awk -v i="$(case $2 in apps) echo 1 ;; dproxy) echo 2 ;; proxy) echo 3 ;; esac)" -v hz="$CLK_TCK" \
          -v parts="$(cat "$TMP/cpusplit-$1-$round.txt")" \
          '/requests in/ {split(parts, p, " "); printf "%.1f\n", p[i] / hz * 1e6 / $1}' "$f" ;;
    esac
  done | median
}
errors() { cat "$TMP"/wrk-"$1"-*.txt | awk '/Non-2xx|Socket errors/ {print}' | head -2 | tr '\n' ' '; }

echo
echo "== $APP (3 instances) on one machine: wrk -t2 -c$CONNS -d$DURATION, median of $ROUNDS rounds, $CORES cores shared by all"
printf '%-17s %12s %10s %10s %12s %14s\n' target "requests/s" "p50 ms" "p99 ms" "CPU us/req" "req/s per core"
for t in $TARGETS; do
  cpu=$(fig "$t" cpu)
  printf '%-17s %12.0f %10.3f %10.3f %12.1f %14.0f  %s\n' "$t" "$(fig "$t" rps)" "$(fig "$t" p50)" "$(fig "$t" p99)" \
    "$cpu" "$(awk -v c="$cpu" 'BEGIN {print 1e6 / c}')" "$(errors "$t")"
done
echo "(CPU us/req: wrk's and every path process's CPU time per request — see the header of this script)"
echo "CPU us/req by part (medians of the rounds):"
printf '%-17s %8s %8s %13s %8s\n' target wrk proxy docker-proxy apps
for t in $TARGETS; do
  printf '%-17s %8.1f %8.1f %13.1f %8.1f\n' "$t" "$(fig "$t" wrk)" "$(fig "$t" proxy)" "$(fig "$t" dproxy)" "$(fig "$t" apps)"
done
ratio() { awk -v a="$(fig "$1" rps)" -v b="$(fig "$2" rps)" 'BEGIN {printf "%.2f", a / b}'; }
cpu_ratio() { awk -v a="$(fig "$1" cpu)" -v b="$(fig "$2" cpu)" 'BEGIN {printf "%.2f", b / a}'; }
has() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
if has router && has nginx; then
  r=$(ratio router nginx)
  echo
  c=$(cpu_ratio router nginx)
  echo "== router/nginx requests/s: $r measured, $c per CPU-second (target ≥ 2: $(awk -v r="$r" -v c="$c" 'BEGIN {print (r >= 2 ? "met" : "NOT met") " measured, " (c >= 2 ? "met" : "NOT met") " per CPU-second"}'))"
fi
if has router-local && has router-published; then
  echo "   router-local/router-published: $(ratio router-local router-published) measured, $(cpu_ratio router-local router-published) per CPU-second (one router process, node-local vs published addresses)"
fi
