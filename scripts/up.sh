#!/usr/bin/env bash
# up.sh — install what is missing, start dinp on this machine (`dinp up`),
# deploy the example app with 2 instances and print how to reach it.
# Safe to run again: it reuses what is already running.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

DATA_DIR=${DINP_DATA_DIR:-/var/lib/dinp}
DASH=${DINP_DASH_ADDR:-127.0.0.1:8000}
ROUTER=${DINP_ROUTER_ADDR:-127.0.0.1:8080}
ROUTER_STATUS=${DINP_ROUTER_STATUS_ADDR:-127.0.0.1:8082}
DOMAIN=${DINP_DOMAIN:-apps.io}
APP=hello

command -v go >/dev/null || { log "Go is required to build dinp (https://go.dev/dl)"; exit 1; }
apt_install curl ca-certificates
start_services

log "building dinp"
mkdir -p bin "$DATA_DIR"
CGO_ENABLED=0 go build -trimpath -o bin/dinp .

pidfile=$DATA_DIR/dinp.pid
if [ -d /run/systemd/system ] && [ "${DINP_NO_SYSTEMD:-}" != 1 ]; then
  # A machine with systemd: dinp runs as a unit and comes back after a reboot.
  log "installing dinp as the systemd unit dinp-up (journalctl -u dinp-up)"
  changed=0
  cmp -s bin/dinp /usr/local/bin/dinp || { install -m 0755 bin/dinp /usr/local/bin/dinp; changed=1; }
  mkdir -p /etc/dinp
  cat >/etc/dinp/up.yaml <<YAML
data-dir: "$DATA_DIR"
domain: "$DOMAIN"
dash-addr: "$DASH"
router-addr: "$ROUTER"
router-status-addr: "$ROUTER_STATUS"
YAML
  install -m 0644 scripts/systemd/dinp-up.service /etc/systemd/system/dinp-up.service
  systemctl daemon-reload
  systemctl enable dinp-up >/dev/null
  if [ $changed = 1 ] || ! systemctl is-active --quiet dinp-up; then systemctl restart dinp-up; fi
  wait_for 30 systemctl is-active --quiet dinp-up
  systemctl show -p MainPID --value dinp-up >"$pidfile"
elif [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "dinp is already running (pid $(cat "$pidfile"))"
else
  log "starting dinp up (log: $DATA_DIR/dinp.log)"
  nohup bin/dinp up --data-dir "$DATA_DIR" --domain "$DOMAIN" \
    --dash-addr "$DASH" --router-addr "$ROUTER" --router-status-addr "$ROUTER_STATUS" \
    >>"$DATA_DIR/dinp.log" 2>&1 &
  echo $! >"$pidfile"
fi
pid=$(cat "$pidfile")
ready() { kill -0 "$pid" && curl -fsS "http://$DASH/api/v1/health" && curl -fsS "http://$ROUTER_STATUS/health"; }
if ! wait_for 90 ready; then
  log "dinp did not become ready; last log lines:"; tail -n 30 "$DATA_DIR/dinp.log" >&2; exit 1
fi

json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }
TOKEN=$(json_field token <"$DATA_DIR/admin.json")
PASSWORD=$(json_field password <"$DATA_DIR/admin.json")
api() { curl -sS -H "Authorization: Bearer $TOKEN" "$@"; }

status=$(api -o /dev/null -w '%{http_code}' "http://$DASH/api/v1/apps/$APP")
if [ "$status" = 404 ]; then
  log "creating app $APP"
  api -fo /dev/null -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$APP\",\"instances\":2,\"memory_mb\":64,\"health_path\":\"/healthz\"}" \
    "http://$DASH/api/v1/apps"
fi
if ! api -f "http://$DASH/api/v1/apps/$APP" | grep -q '"release": *{'; then
  log "deploying the example app"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd scripts/examples/hello && CGO_ENABLED=0 go build -trimpath -o "$work/hello" . && cp Procfile "$work/")
  tar -C "$work" -czf "$work/hello.tar.gz" hello Procfile
  api -f -X POST -H 'Content-Type: application/gzip' --data-binary @"$work/hello.tar.gz" \
    "http://$DASH/api/v1/apps/$APP/deploy" >/dev/null
fi

log "waiting for both instances to answer through the router"
seen() {
  for _ in $(seq 20); do
    curl -fsS -H "Host: $APP.$DOMAIN" "http://$ROUTER/" 2>/dev/null || true
  done | sed -n 's/.*instance=\([0-9a-f]*\).*/\1/p' | sort -u | wc -l
}
healthy() { api -f "http://$DASH/api/v1/apps/$APP" | grep -o '"health": *"healthy"' | wc -l; }
deadline=$((SECONDS + 120))
until [ "$(healthy)" -ge 2 ] && [ "$(seen)" -ge 2 ]; do
  [ $SECONDS -lt $deadline ] || { log "the example app did not come up; see $DATA_DIR/dinp.log"; exit 1; }
  sleep 1
done

cat <<MSG

dinp is up.
  dashboard:  http://$DASH/
  login:      admin / $PASSWORD
  API token:  $TOKEN
  try:        curl -H 'Host: $APP.$DOMAIN' http://$ROUTER/
  stop:       scripts/down.sh
MSG
