#!/usr/bin/env bash
# bench-drains.sh — log drain throughput: one app writes DINP_BENCH_LINES
# (100,000) lines at DINP_BENCH_RATE (10,000) lines/s through the real agent
# log path (Docker → agent → Redis stream → leader's drain) to Debian's
# rsyslog on 127.0.0.1 over TCP; prints lines sent and received, lost and
# out of order (target: none lost), and the agent's CPU per 1,000 lines.
# A real 3-agent cluster on 127.0.0.1 (own database, key prefix, rsyslogd).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"
start_services
apt_install rsyslog rsyslog-gnutls
cd "$ROOT"
DINP_BENCH_DRAINS=1 go test -count=1 -timeout 20m -run '^TestBenchDrains$' -v . | grep -E '^bench-drains|^(ok|FAIL|---)|e2e_drains_test'
