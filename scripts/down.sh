#!/usr/bin/env bash
# down.sh — stop what up.sh started: the dinp process and the app containers
# of this machine's node. MariaDB and Redis keep running (other things may use
# them); pass --services to stop them too.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DINP_DATA_DIR:-/var/lib/dinp}
pidfile=$DATA_DIR/dinp.pid
log() { printf '==> %s\n' "$*" >&2; }

if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/dinp-up.service ]; then
  log "stopping the dinp-up unit"
  systemctl disable --now dinp-up >/dev/null 2>&1 || true
elif [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  pid=$(cat "$pidfile")
  log "stopping dinp (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$pidfile"

node=${DINP_NODE_ID:-$(hostname)}
ids=$(docker ps -aq --filter "label=dinp.node=$node" 2>/dev/null || true)
if [ -n "$ids" ]; then
  log "removing app containers of node $node"
  docker rm -f $ids >/dev/null
fi

if [ "${1:-}" = --services ]; then
  log "stopping redis and mariadb"
  redis-cli -h 127.0.0.1 shutdown nosave >/dev/null 2>&1 || true
  (service mariadb stop >/dev/null 2>&1) || mysqladmin --protocol=socket shutdown || true
fi
log "dinp is down"
