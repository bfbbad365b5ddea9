#!/usr/bin/env bash
# chaos.sh — fault benchmark: what each fault of the state stores and of the
# platform's own processes costs the users of a running app.
#
# Starts its own platform from separate processes (registry, builder, two
# servers, an agent, hm, router, dash) on free 127.0.0.1 ports, with its own
# MariaDB server (private data dir and port, so it can really be stopped) and
# its own Redis, deploys the example app with 3 instances and, one fault at a
# time, under continuous wrk load through the router, prints failed requests,
# containers recreated and seconds from the end of the fault until the app's
# route lists every instance healthy again:
#
#   redis_restarted_empty   redis-server SIGKILLed, down 12 s, started empty
#   redis_master_killed     Sentinel: master SIGKILLed, replica promoted
#   mysql_stopped           MariaDB stopped 15 s, then started again
#   leader_killed           the leading server SIGKILLed
#   agent_killed            the agent SIGKILLed and started again
#   hm_killed               hm SIGKILLed and started again
#
# Targets for every row: 0 failed requests, 0 containers recreated,
# recovered <= 10 s. All traffic stays on 127.0.0.1; it stops by itself and
# removes everything it started (processes by PID, containers by node label).
#
# Environment: CHAOS_CONNECTIONS (16), CHAOS_OBSERVE (20: seconds of load
# after each fault ends).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

CONNS=${CHAOS_CONNECTIONS:-16}
OBSERVE=${CHAOS_OBSERVE:-20}
APP=hello
DOMAIN=apps.io
NODE="chaos-$$"
PREFIX="dinp-chaos-$$"
TOKEN_CLUSTER=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

apt_install curl ca-certificates wrk redis-server redis-tools redis-sentinel mariadb-server mariadb-client
builder_host_deps
check_docker

WORK=$(mktemp -d /tmp/dinp-chaos.XXXXXX)
declare -A PIDS=()   # process name → pid (everything this script started)
declare -A ARGS=()   # process name → command line, to start it again

stop_pid() { # stop_pid PID: TERM, then KILL after 10 s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  set +e
  for name in "${!PIDS[@]}"; do
    case $name in mysql|redis*|sentinel*) ;; *) stop_pid "${PIDS[$name]}" ;; esac
  done
  ids=$(docker ps -aq --filter "label=dinp.node=$NODE" 2>/dev/null)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  for name in "${!PIDS[@]}"; do stop_pid "${PIDS[$name]}"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# run NAME CMD...: start a process in the background, log to $WORK/NAME.log.
run() {
  local name=$1; shift
  ARGS[$name]=$(printf '%q ' "$@")
  "$@" >>"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
}
# again NAME: start NAME again with the same command line.
again() {
  local name=$1
  echo "---- started again" >>"$WORK/$name.log"
  # exec: the PID kept is the process's own, not a subshell's around it.
  (eval "exec ${ARGS[$name]}") >>"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
}
kill9() { kill -KILL "${PIDS[$1]}" 2>/dev/null || true; wait "${PIDS[$1]}" 2>/dev/null || true; }

log "building dinp and the example app"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/dinp" .)
mkdir -p "$WORK/app"
(cd "$ROOT/scripts/examples/hello" && CGO_ENABLED=0 go build -trimpath -o "$WORK/app/hello" . && cp Procfile "$WORK/app/")
tar -C "$WORK/app" -czf "$WORK/hello.tar.gz" hello Procfile

# --- MariaDB of our own: a data dir and a port nobody else uses.
free_port MYSQL_PORT
start_mysql() {
  run mysql mariadbd --no-defaults --datadir="$WORK/mysql" --socket="$WORK/mysql.sock" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --user=root --skip-log-bin --innodb-buffer-pool-size=64M
  wait_for 60 mysqladmin --no-defaults --socket="$WORK/mysql.sock" -uroot ping ||
    { log "private mariadb did not start"; tail -n 20 "$WORK/mysql.log" >&2; exit 1; }
}
log "starting a private MariaDB on 127.0.0.1:$MYSQL_PORT"
mariadb-install-db --no-defaults --datadir="$WORK/mysql" --user=root --auth-root-authentication-method=normal >"$WORK/mysql-install.log" 2>&1
start_mysql
mysql --no-defaults --socket="$WORK/mysql.sock" -uroot -e \
  "CREATE DATABASE dinp; CREATE USER 'dinp'@'127.0.0.1' IDENTIFIED BY 'dinp'; GRANT ALL ON dinp.* TO 'dinp'@'127.0.0.1';"
DSN="dinp:dinp@tcp(127.0.0.1:$MYSQL_PORT)/dinp"

# --- Redis of our own. Plain: one server without persistence. Sentinel:
# a master, a replica and three sentinels.
free_port REDIS_PORT; free_port REPLICA_PORT
start_redis_own() { # start_redis_own NAME PORT [MASTER_PORT]
  local name=$1 port=$2 master=${3:-}
  mkdir -p "$WORK/$name"
  if [ -n "$master" ]; then
    run "$name" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$WORK/$name" --replicaof 127.0.0.1 "$master"
  else
    run "$name" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$WORK/$name"
  fi
  wait_for 20 redis-cli -p "$port" ping || { log "redis $name did not start"; exit 1; }
}

# --- the platform: separate processes, so each can be killed on its own.
start_platform() { # start_platform REDIS_FLAGS...
  local redis_flags=("$@")
  local v p
  for v in REGISTRY BUILDER DASH ROUTER ROUTER_STATUS HM AGENT SERVER1 SERVER2; do
    free_port p
    printf -v "$v" '127.0.0.1:%s' "$p"
  done
  local common=(--mysql-dsn "$DSN" --key-prefix "$PREFIX" --cluster-token "$TOKEN_CLUSTER" --domain "$DOMAIN" --log-level info "${redis_flags[@]}")
  local d
  for d in registry builder server-1 server-2 agent hm router dash; do mkdir -p "$WORK/data/$d"; done
  run registry "$WORK/dinp" registry --data-dir "$WORK/data/registry" "${common[@]}" --registry-addr "$REGISTRY"
  run server-1 "$WORK/dinp" server --data-dir "$WORK/data/server-1" "${common[@]}" --addr "$SERVER1" --server-id srv-1
  run server-2 "$WORK/dinp" server --data-dir "$WORK/data/server-2" "${common[@]}" --addr "$SERVER2" --server-id srv-2
  run builder "$WORK/dinp" builder --data-dir "$WORK/data/builder" "${common[@]}" --builder-addr "$BUILDER" \
    --builder-registry-addr "$REGISTRY" --builder-registry-host "$REGISTRY"
  run agent "$WORK/dinp" agent --data-dir "$WORK/data/agent" "${common[@]}" --node-id "$NODE" --advertise-addr 127.0.0.1 \
    --server-url "http://$SERVER1,http://$SERVER2" --agent-addr "$AGENT"
  run hm "$WORK/dinp" hm --data-dir "$WORK/data/hm" "${common[@]}" --status-addr "$HM"
  run router "$WORK/dinp" router --data-dir "$WORK/data/router" "${common[@]}" --addr "$ROUTER" --status-addr "$ROUTER_STATUS"
  run dash "$WORK/dinp" dash --data-dir "$WORK/data/dash" "${common[@]}" --addr "$DASH" --builder-url "http://$BUILDER"
  ready() { curl -fsS "http://$DASH/api/v1/health" >/dev/null && [ -s "$WORK/data/dash/admin.json" ]; }
  wait_for 90 ready || { log "dash did not become ready"; tail -n 20 "$WORK/dash.log" >&2; exit 1; }
  TOKEN=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$WORK/data/dash/admin.json" | head -n1)
}
api() { curl -sS -H "Authorization: Bearer $TOKEN" "$@"; }
stop_platform() {
  local name
  for name in dash router hm agent builder server-1 server-2 registry; do stop_pid "${PIDS[$name]}"; unset "PIDS[$name]"; done
  ids=$(docker ps -aq --filter "label=dinp.node=$NODE" 2>/dev/null || true)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  mysql --no-defaults --socket="$WORK/mysql.sock" -uroot -e "DROP DATABASE dinp; CREATE DATABASE dinp; GRANT ALL ON dinp.* TO 'dinp'@'127.0.0.1';"
  rm -rf "$WORK/data"
}

# serving: 3 instances healthy in the app's route.
serving() {
  api -f "http://$DASH/api/v1/apps/$APP" 2>/dev/null | grep -o '"health": *"healthy"' | wc -l | grep -qx 3 &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $APP.$DOMAIN" "http://$ROUTER/")" = 200 ]
}
deploy_app() {
  api -fo /dev/null -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$APP\",\"instances\":3,\"memory_mb\":64,\"health_path\":\"/healthz\"}" "http://$DASH/api/v1/apps"
  api -fo /dev/null -X POST -H 'Content-Type: application/gzip' --data-binary @"$WORK/hello.tar.gz" \
    "http://$DASH/api/v1/apps/$APP/deploy"
  wait_for 120 serving || { log "the app did not come up"; exit 1; }
}
containers() { docker ps -aq --no-trunc --filter "label=dinp.node=$NODE" | sort; }
# route_whole: the route in Redis lists 3 backends, all healthy (read from
# whichever Redis currently serves).
route_whole() {
  local port=$1
  redis-cli -p "$port" hget "$PREFIX:routes" "$APP.$DOMAIN" 2>/dev/null | grep -o '"healthy":true' | wc -l | grep -qx 3
}
leader_index() {
  local i=1 a
  for a in "$SERVER1" "$SERVER2"; do
    curl -fsS "http://$a/health" 2>/dev/null | grep -q '"leader":true' && { echo "$i"; return; }
    i=$((i + 1))
  done
  echo 0
}

ROWS=()
# chaos NAME REDIS_PORT_FN FAULT_FN: run the fault under wrk load and record a row.
chaos() {
  local name=$1 portfn=$2 fault=$3
  local before after recreated total=$((OBSERVE + 60)) t_end t_ok secs
  before=$(containers)
  log "fault $name (wrk -c$CONNS through the router)"
  wrk -t2 -c"$CONNS" -d"${total}s" -H "Host: $APP.$DOMAIN" "http://$ROUTER/" >"$WORK/wrk-$name.txt" 2>&1 &
  local wrk_pid=$!
  sleep 3
  "$fault"
  t_end=$(date +%s.%N)
  t_ok=
  for _ in $(seq 600); do
    if route_whole "$("$portfn")" && serving; then t_ok=$(date +%s.%N); break; fi
    sleep 0.1
  done
  sleep "$OBSERVE"
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  after=$(containers)
  recreated=$(comm -23 <(echo "$before") <(echo "$after") | grep -c . || true)
  local requests non2xx sockerr failed
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk-$name.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk-$name.txt")
  sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$WORK/wrk-$name.txt")
  failed=$(( ${non2xx:-0} + ${sockerr:-0} ))
  if [ -n "$t_ok" ]; then secs=$(awk "BEGIN {d = $t_ok - $t_end; if (d < 0) d = 0; printf \"%.1f\", d}"); else secs="never"; fi
  ROWS+=("$(printf '| %-22s | %10s | %6s | %10s | %12s |' "$name" "${requests:-0}" "$failed" "$recreated" "$secs")")
  log "$name: $failed of ${requests:-0} requests failed, $recreated containers recreated, recovered in $secs s"
}

plain_port() { echo "$REDIS_PORT"; }
f_redis_restart() {
  kill9 redis
  sleep 12
  start_redis_own redis "$REDIS_PORT"
}
f_mysql_stop() {
  stop_pid "${PIDS[mysql]}"
  sleep 15
  start_mysql
}
f_leader_kill() {
  local i; i=$(leader_index)
  [ "$i" != 0 ] || { log "no leader found"; return; }
  kill9 "server-$i"
  sleep 5
  again "server-$i"
}
f_agent_kill() { kill9 agent; sleep 1; again agent; }
f_hm_kill() { kill9 hm; sleep 1; again hm; }

# --- run 1: a single Redis.
start_redis_own redis "$REDIS_PORT"
log "starting the platform on Redis 127.0.0.1:$REDIS_PORT"
start_platform --redis-addr "127.0.0.1:$REDIS_PORT"
deploy_app
chaos redis_restarted_empty plain_port f_redis_restart
chaos mysql_stopped plain_port f_mysql_stop
chaos leader_killed plain_port f_leader_kill
chaos agent_killed plain_port f_agent_kill
chaos hm_killed plain_port f_hm_kill
stop_platform
kill9 redis

# --- run 2: Redis with Sentinel.
start_redis_own redis-master "$REDIS_PORT"
start_redis_own redis-replica "$REPLICA_PORT" "$REDIS_PORT"
SENTINELS=
for i in 1 2 3; do
  free_port sp
  mkdir -p "$WORK/sentinel-$i"
  printf 'bind 127.0.0.1\nport %s\ndir %s\nsentinel monitor dinp 127.0.0.1 %s 2\nsentinel down-after-milliseconds dinp 1000\nsentinel failover-timeout dinp 5000\nsentinel parallel-syncs dinp 1\n' \
    "$sp" "$WORK/sentinel-$i" "$REDIS_PORT" >"$WORK/sentinel-$i/sentinel.conf"
  run "sentinel-$i" redis-sentinel "$WORK/sentinel-$i/sentinel.conf"
  wait_for 20 redis-cli -p "$sp" ping || { log "sentinel $i did not start"; exit 1; }
  SENTINELS="${SENTINELS:+$SENTINELS,}127.0.0.1:$sp"
done
wait_for 30 sh -c "redis-cli -p $REPLICA_PORT info replication | grep -q master_link_status:up"
log "starting the platform on Sentinel ($SENTINELS)"
start_platform --redis-sentinels "$SENTINELS" --redis-master dinp
deploy_app
master_port() { redis-cli -p "${SENTINELS##*:}" sentinel get-master-addr-by-name dinp 2>/dev/null | sed -n 2p; }
f_master_kill() {
  kill9 redis-master
  wait_for 30 sh -c "redis-cli -p $REPLICA_PORT role | head -1 | grep -qx master" || log "the replica was not promoted"
}
chaos redis_master_killed master_port f_master_kill

echo
echo "fault benchmark: wrk -t2 -c$CONNS keep-alive GETs through the router to a 3-instance app; recovery = route lists 3 healthy backends and the app answers"
printf '| %-22s | %10s | %6s | %10s | %12s |\n' fault requests failed recreated "recovered s"
echo "|------------------------|------------|--------|------------|--------------|"
printf '%s\n' "${ROWS[@]}"
fails=0
for r in "${ROWS[@]}"; do
  f=$(echo "$r" | awk -F'|' '{gsub(/ /, "", $4); print $4}')
  c=$(echo "$r" | awk -F'|' '{gsub(/ /, "", $5); print $5}')
  s=$(echo "$r" | awk -F'|' '{gsub(/ /, "", $6); print $6}')
  if [ "$f" != 0 ] || [ "$c" != 0 ] || [ "$s" = never ] || awk "BEGIN {exit !($s > 10)}"; then fails=$((fails + 1)); fi
done
if [ $fails = 0 ]; then
  echo "targets (0 failed, 0 recreated, recovered <= 10 s): met for every fault"
else
  echo "targets (0 failed, 0 recreated, recovered <= 10 s): NOT met for $fails fault(s)"
fi
