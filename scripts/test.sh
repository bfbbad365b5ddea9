#!/usr/bin/env bash
# test.sh — run every test of dinp against real MariaDB, Redis and Docker,
# starting (and installing) them first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
start_services
# The dashboard's browser test drives headless Chromium.
command -v chromium >/dev/null || apt_install chromium
# The Prometheus configuration is checked with promtool (prometheus), log
# drains are delivered to a real rsyslog over TCP and TLS (rsyslog-gnutls).
apt_install prometheus rsyslog rsyslog-gnutls
# The runtime-stack end-to-end tests compile their apps: a jar and a war
# with javac, a C program with gcc.
apt_install openjdk-17-jdk-headless gcc libc6-dev
# Automatic TLS is tested against Debian's pebble, a test ACME CA (with
# pebble-challtestsrv as its DNS).
apt_install pebble
# The systemd units are checked with systemd-analyze verify (TestSystemdUnits).
command -v systemd-analyze >/dev/null || apt_install systemd

# A fresh machine has no Debian-based stacks in its stack cache: build them in
# the background from the start (vet, compiling and the other packages' tests
# leave the second core idle much of the time) instead of inside the
# end-to-end tests that need them, one after the other. The tests wait on the
# stack cache's per-stack lock; with a warm cache this finds every stack and
# ends at once. Its failure fails nothing by itself: the tests then build the
# stack and report why.
warm_log=$(mktemp /tmp/dinp-stack-warm.XXXXXX)
DINP_TEST_ROOTFS=debian,python,node,java setsid go test -count=1 -timeout 60m -run '^TestRootfsBuild$' ./builder/ >"$warm_log" 2>&1 &
warm_pid=$!
trap 'kill -- "-$warm_pid" 2>/dev/null || true' EXIT # its own process group: mmdebstrap too

log "go vet"
go vet ./...
log "go test"
# Integration and end-to-end tests never skip under CI=true (see common/testenv).
status=0
go test -count=1 -timeout 50m "$@" ./... || status=$?
log "go test -race (the packages whose concurrency is their own: proxy, tables, probes)"
go test -race -count=1 -timeout 20m "$@" ./router/... ./hm/... ./server/reconcile/... ./server/placement/... ./common/ || status=$?
wait "$warm_pid" || { log "background stack build failed:"; tail -n 20 "$warm_log" >&2; }
grep -h "built in" "$warm_log" || true
rm -f "$warm_log"
exit "$status"
