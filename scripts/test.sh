#!/usr/bin/env bash
# test.sh — run every test of dinp against real MariaDB, Redis and Docker,
# starting (and installing) them first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
start_services
# The dashboard's browser test drives headless Chromium.
command -v chromium >/dev/null || apt_install chromium
# The runtime-stack end-to-end tests compile their apps: a jar and a war
# with javac, a C program with gcc.
apt_install openjdk-17-jdk-headless gcc libc6-dev

log "go vet"
go vet ./...
log "go test"
# Integration and end-to-end tests never skip under CI=true (see common/testenv).
go test -count=1 -timeout 50m "$@" ./...
log "go test -race (the packages whose concurrency is their own: proxy, tables, probes)"
go test -race -count=1 -timeout 20m "$@" ./router/... ./hm/... ./server/reconcile/... ./server/placement/... ./common/
