#!/usr/bin/env bash
# up.sh — install what is missing, start dinp on this machine (`dinp up`),
# deploy the example app with 2 instances and print how to reach it.
# Safe to run again: it reuses what is already running.
#
# Where systemd runs, dinp runs as the unit dinp-up (scripts/systemd/) and
# comes back after a reboot; elsewhere (containers) in the background.
# DINP_TLS=1 serves the server, builder, registry and dash over TLS with a
# private CA and certificate made by scripts/pki.sh in DINP_PKI_DIR
# (/etc/dinp/pki): give other machines' components its ca.pem (--ca).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

DATA_DIR=${DINP_DATA_DIR:-/var/lib/dinp}
DASH=${DINP_DASH_ADDR:-127.0.0.1:8000}
ROUTER=${DINP_ROUTER_ADDR:-127.0.0.1:8080}
ROUTER_STATUS=${DINP_ROUTER_STATUS_ADDR:-127.0.0.1:8082}
DOMAIN=${DINP_DOMAIN:-apps.io}
PKI=${DINP_PKI_DIR:-/etc/dinp/pki}
APP=hello

command -v go >/dev/null || { log "Go is required to build dinp (https://go.dev/dl)"; exit 1; }
apt_install curl ca-certificates
start_services

log "building dinp"
mkdir -p bin "$DATA_DIR"
CGO_ENABLED=0 go build -trimpath -o bin/dinp .

SCHEME=http
CURL=(curl)
UP_ARGS=(--data-dir "$DATA_DIR" --domain "$DOMAIN" --dash-addr "$DASH" --router-addr "$ROUTER" --router-status-addr "$ROUTER_STATUS")
if [ "${DINP_TLS:-}" = 1 ]; then
  apt_install openssl
  # One certificate for the machine's listeners: its name, its address, 127.0.0.1.
  [ -s "$PKI/platform.pem" ] || scripts/pki.sh "$PKI" platform
  SCHEME=https
  CURL=(curl --cacert "$PKI/ca.pem")
  UP_ARGS+=(--tls-cert "$PKI/platform.pem" --tls-key "$PKI/platform-key.pem" --ca "$PKI/ca.pem")
fi

pidfile=$DATA_DIR/dinp.pid
if [ -d /run/systemd/system ] && [ "${DINP_NO_SYSTEMD:-}" != 1 ]; then
  # A machine with systemd: dinp runs as a unit and comes back after a reboot.
  log "installing dinp as the systemd unit dinp-up (journalctl -u dinp-up)"
  changed=0
  cmp -s bin/dinp /usr/local/bin/dinp || { install -m 0755 bin/dinp /usr/local/bin/dinp; changed=1; }
  mkdir -p /etc/dinp
  # The same settings as the background start below, as the unit's config
  # file (flag name: value).
  yaml=$(for ((i = 0; i < ${#UP_ARGS[@]}; i += 2)); do printf '%s: "%s"\n' "${UP_ARGS[i]#--}" "${UP_ARGS[i+1]}"; done)
  if [ "$yaml" != "$(cat /etc/dinp/up.yaml 2>/dev/null)" ]; then
    printf '%s\n' "$yaml" >/etc/dinp/up.yaml
    changed=1
  fi
  cmp -s scripts/systemd/dinp-up.service /etc/systemd/system/dinp-up.service || changed=1
  install -m 0644 scripts/systemd/dinp-up.service /etc/systemd/system/dinp-up.service
  systemctl daemon-reload
  systemctl enable dinp-up >/dev/null
  if [ $changed = 1 ] || ! systemctl is-active --quiet dinp-up; then systemctl restart dinp-up; fi
  running() { systemctl is-active --quiet dinp-up; }
  logs() { journalctl -u dinp-up -n 30 --no-pager >&2; }
  wait_for 30 running || { log "the dinp-up unit did not start; last log lines:"; logs; exit 1; }
  systemctl show -p MainPID --value dinp-up >"$pidfile"
else
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "dinp is already running (pid $(cat "$pidfile"))"
  else
    log "starting dinp up (log: $DATA_DIR/dinp.log)"
    nohup bin/dinp up "${UP_ARGS[@]}" >>"$DATA_DIR/dinp.log" 2>&1 &
    echo $! >"$pidfile"
  fi
  pid=$(cat "$pidfile")
  running() { kill -0 "$pid"; }
  logs() { tail -n 30 "$DATA_DIR/dinp.log" >&2; }
fi
DASH_URL=$SCHEME://$DASH
ready() { running && "${CURL[@]}" -fsS "$DASH_URL/api/v1/health" && curl -fsS "http://$ROUTER_STATUS/health"; }
if ! wait_for 90 ready; then
  log "dinp did not become ready; last log lines:"; logs; exit 1
fi

json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }
TOKEN=$(json_field token <"$DATA_DIR/admin.json")
PASSWORD=$(json_field password <"$DATA_DIR/admin.json")
api() { "${CURL[@]}" -sS -H "Authorization: Bearer $TOKEN" "$@"; }

status=$(api -o /dev/null -w '%{http_code}' "$DASH_URL/api/v1/apps/$APP")
if [ "$status" = 404 ]; then
  log "creating app $APP"
  api -fo /dev/null -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$APP\",\"instances\":2,\"memory_mb\":64,\"health_path\":\"/healthz\"}" \
    "$DASH_URL/api/v1/apps"
fi
if ! api -f "$DASH_URL/api/v1/apps/$APP" | grep -q '"release": *{'; then
  log "deploying the example app"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd scripts/examples/hello && CGO_ENABLED=0 go build -trimpath -o "$work/hello" . && cp Procfile "$work/")
  tar -C "$work" -czf "$work/hello.tar.gz" hello Procfile
  api -f -X POST -H 'Content-Type: application/gzip' --data-binary @"$work/hello.tar.gz" \
    "$DASH_URL/api/v1/apps/$APP/deploy" >/dev/null
fi

log "waiting for both instances to answer through the router"
seen() {
  for _ in $(seq 20); do
    curl -fsS -H "Host: $APP.$DOMAIN" "http://$ROUTER/" 2>/dev/null || true
  done | sed -n 's/.*instance=\([0-9a-f]*\).*/\1/p' | sort -u | wc -l
}
healthy() { api -f "$DASH_URL/api/v1/apps/$APP" | grep -o '"health": *"healthy"' | wc -l; }
deadline=$((SECONDS + 120))
until [ "$(healthy)" -ge 2 ] && [ "$(seen)" -ge 2 ]; do
  [ $SECONDS -lt $deadline ] || { log "the example app did not come up; last log lines:"; logs; exit 1; }
  sleep 1
done

cat <<MSG

dinp is up.
  dashboard:  $DASH_URL/
  login:      admin / $PASSWORD
  API token:  $TOKEN
  try:        curl -H 'Host: $APP.$DOMAIN' http://$ROUTER/
  stop:       scripts/down.sh
MSG
