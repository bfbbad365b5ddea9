#!/usr/bin/env bash
# join.sh SERVER_URLS CLUSTER_TOKEN — make this Docker host a node of an
# existing dinp installation, in one command:
#   scripts/join.sh http://10.0.0.1:1980,http://10.0.0.2:1980 "$(cat /var/lib/dinp/cluster-token)"
# It installs Docker if missing, installs the dinp binary (DINP_BIN, or built
# from this checkout with Go), writes /etc/dinp/agent.yaml and runs the agent
# as the systemd unit dinp@agent (or in the background where systemd does not
# run). The agent creates its node identity (<data-dir>/node-<id>.secret) on
# its first start; the servers learn it on the first heartbeat.
#
# Environment: DINP_NODE_ID (hostname), DINP_ADVERTISE_ADDR (the address of
# the default route), DINP_REDIS_ADDR or DINP_REDIS_SENTINELS +
# DINP_REDIS_MASTER (log shipping), DINP_DATA_DIR (/var/lib/dinp),
# DINP_NODE_LABELS (k=v,...), DINP_BIN, DINP_CA (the platform's CA certificate
# when servers serve TLS: https:// server URLs; see scripts/pki.sh),
# DINP_REGISTRY_HOST (host:port of a registry serving TLS with that CA: the
# Docker engine trusts it for pulls, /etc/docker/certs.d/<host:port>/ca.crt).
# Safe to run again: the agent restarts with the new settings.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

[ $# -eq 2 ] || { echo "usage: $0 SERVER_URLS CLUSTER_TOKEN" >&2; exit 2; }
SERVERS=$1 TOKEN=$2
NODE=${DINP_NODE_ID:-$(hostname)}
ADDR=${DINP_ADVERTISE_ADDR:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
DATA=${DINP_DATA_DIR:-/var/lib/dinp}
[ -n "$ADDR" ] || { log "cannot tell this host's address; set DINP_ADVERTISE_ADDR"; exit 2; }

check_docker
if [ -n "${DINP_BIN:-}" ]; then
  install -m 0755 "$DINP_BIN" /usr/local/bin/dinp
else
  command -v go >/dev/null || { log "set DINP_BIN to a dinp binary, or install Go to build one"; exit 1; }
  log "building dinp"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o /usr/local/bin/dinp .)
fi

mkdir -p /etc/dinp "$DATA"
umask 077
{
  echo "node-id: \"$NODE\""
  echo "advertise-addr: \"$ADDR\""
  echo "server-url: \"$SERVERS\""
  echo "cluster-token: \"$TOKEN\""
  echo "data-dir: \"$DATA\""
  [ -n "${DINP_REDIS_ADDR:-}" ] && echo "redis-addr: \"$DINP_REDIS_ADDR\""
  [ -n "${DINP_REDIS_SENTINELS:-}" ] && echo "redis-sentinels: \"$DINP_REDIS_SENTINELS\""
  [ -n "${DINP_REDIS_MASTER:-}" ] && echo "redis-master: \"$DINP_REDIS_MASTER\""
  [ -n "${DINP_NODE_LABELS:-}" ] && echo "node-labels: \"$DINP_NODE_LABELS\""
  if [ -n "${DINP_CA:-}" ]; then
    install -m 0644 "$DINP_CA" /etc/dinp/ca.pem
    echo "ca: \"/etc/dinp/ca.pem\""
  fi
} >/etc/dinp/agent.yaml
log "wrote /etc/dinp/agent.yaml (node $NODE, address $ADDR)"
case "$SERVERS" in
  *https://*) [ -n "${DINP_CA:-}" ] || log "https server URLs without DINP_CA: the servers' certificate must be publicly trusted" ;;
esac
if [ -n "${DINP_REGISTRY_HOST:-}" ] && [ -n "${DINP_CA:-}" ]; then
  install -D -m 0644 "$DINP_CA" "/etc/docker/certs.d/$DINP_REGISTRY_HOST/ca.crt"
  log "the Docker engine trusts the registry $DINP_REGISTRY_HOST with the CA"
fi

if [ -d /run/systemd/system ]; then
  install -m 0644 "$ROOT/scripts/systemd/dinp@.service" /etc/systemd/system/dinp@.service
  systemctl daemon-reload
  systemctl enable dinp@agent >/dev/null
  systemctl restart dinp@agent
  wait_for 30 systemctl is-active --quiet dinp@agent ||
    { log "the agent did not start:"; journalctl -u dinp@agent -n 30 --no-pager >&2; exit 1; }
  log "agent running as dinp@agent (journalctl -u dinp@agent)"
else
  if [ -f "$DATA/agent.pid" ] && kill -0 "$(cat "$DATA/agent.pid")" 2>/dev/null; then
    log "stopping the agent started before (pid $(cat "$DATA/agent.pid")): it restarts with the new settings"
    kill -TERM "$(cat "$DATA/agent.pid")"
    wait_for 30 sh -c "! kill -0 $(cat "$DATA/agent.pid")" || { log "the old agent did not stop"; exit 1; }
  fi
  nohup /usr/local/bin/dinp agent --config /etc/dinp/agent.yaml >>"$DATA/agent.log" 2>&1 &
  echo $! >"$DATA/agent.pid"
  log "no systemd here: agent started in the background (pid $(cat "$DATA/agent.pid"), log $DATA/agent.log)"
fi
