#!/usr/bin/env bash
# bench-hm.sh — hm at scale: 10,000 simulated endpoints on 127.0.0.1 probed
# every second by the real `dinp hm` for 30 s; prints probes per second, hm
# CPU per 1,000 probes and memory, then how fast 100 failing endpoints are
# marked unhealthy. Uses a private Redis key prefix and deletes it at exit.
# Not run by scripts/test.sh. Extra arguments go to the bench program
# (e.g. --endpoints 2000 --duration 10s).
set -euo pipefail
cd "$(dirname "$0")/.."

# One socket per endpoint and per keep-alive connection: raise the soft
# open-files limit to the hard one (the endpoints are split into processes
# of 2,500 so each stays far below it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "building dinp and the bench program..."
go build -o "$tmp/dinp" .
go build -o "$tmp/hm-bench" ./hm/bench
"$tmp/hm-bench" --dinp "$tmp/dinp" --redis "${DINP_REDIS_ADDR:-127.0.0.1:6379}" "$@"
