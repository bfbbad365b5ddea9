#!/usr/bin/env bash
# bench-dash.sh — dash fairness under log follows: 10 users hold 100
# `logs?follow=1` streams of an app writing DINP_BENCH_RATE (100) lines/s while another user
# reads GET /api/v1/apps/{app} 500 times; prints p50/p99/max (target: p99 <
# 50 ms). Uses the real MySQL and Redis (own database and key prefix);
# traffic stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"
start_services
cd "$ROOT"
DINP_BENCH=1 go test -count=1 -run '^TestFollowFairnessBench$' -v ./dash/ | grep -E 'follows|^(ok|FAIL|---)'
