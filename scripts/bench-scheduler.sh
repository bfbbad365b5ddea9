#!/usr/bin/env bash
# bench-scheduler.sh — the scheduler on a simulated cluster and the heartbeat
# ingest rate of one server (~1 minute, stops by itself, 127.0.0.1 only).
#
# Prints, for 1,000 nodes and 50,000 instances over 5,000 apps (10 each,
# 128 MB, 16 GB nodes): the pure reconcile step (diff + placement +
# assignments + routes, reconcile.Compute) from empty, in the steady state
# (nothing to do: the plan must write no row) and after losing 10% of the
# nodes — median wall and CPU time of BENCH_RUNS runs; the drain of one node
# (its ~50 instances): the round that places their replacements (the whole
# reconcile round, target <= 100 ms), and the whole drain played round by
# round (agents converging between rounds) with its total reconcile time;
# then the heartbeats
# per second one real `server` (follower: it only ingests) answers over HTTP
# on loopback with a real Redis, from BENCH_WORKERS keep-alive senders, each
# beat carrying its node's 50 containers and answered with its 50
# assignments. The load generator is a child process sharing the CPUs with
# the server (pre-encoded requests on raw HTTP/1.1 connections, standing in
# for agents on other machines); the CPU cost line splits server, Redis and
# generator per beat — "server+Redis beats per CPU-second" is the capacity
# figure that does not depend on the generator.
#
# Targets (issue 4): from empty >= 50,000 instances/s; steady state <= 100 ms;
# >= 5,000 heartbeats/s. Issue 15: replacements of a drained node placed in
# <= 100 ms.
#
# Environment: BENCH_NODES (1000), BENCH_APPS (5000), BENCH_INSTANCES (10 per
# app), BENCH_RUNS (5), BENCH_WORKERS (64), BENCH_HEARTBEAT_DURATION (5s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"
start_redis

BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
(cd "$ROOT" && go build -o "$BIN/bench-scheduler" ./server/bench)
"$BIN/bench-scheduler" \
  -nodes "${BENCH_NODES:-1000}" -apps "${BENCH_APPS:-5000}" -instances "${BENCH_INSTANCES:-10}" \
  -runs "${BENCH_RUNS:-5}" -workers "${BENCH_WORKERS:-64}" \
  -heartbeat-duration "${BENCH_HEARTBEAT_DURATION:-5s}" -redis-addr 127.0.0.1:6379
