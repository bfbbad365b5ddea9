#!/usr/bin/env bash
# bench-metrics.sh — what app metrics (issue #16) cost, in one run (~4 min):
#
# (a) router throughput with app metrics on vs off, in the same run: two
#     `dinp router` processes on one nginx backend (`return 200`, one
#     worker: lighter than the router), one with the default flags and one
#     with --app-metrics=false, measured by wrk in alternating rounds. The
#     cost is printed in % of requests/s (target ≤ 3 %) and of CPU µs per
#     request (the routers' own CPU time over the requests they answered,
#     which does not depend on how the shared cores were split). A third
#     router with --metrics=false shows what all per-app counting costs.
# (b) GET /api/v1/apps/{app}/metrics?window=1h p50/p99 with 1,000 apps
#     reporting (target p99 ≤ 50 ms): dash/metrics_bench_test.go seeds an
#     hour of 10 s steps for 1,000 apps × 2 instances through the real
#     writer (Store.Flush, as routers and agents write), then times the
#     real endpoint (and 6h, 24h, and GET /apps/{app} as a baseline), and
#     prints the Redis memory the rings take per app.
# (c) micro: Go benchmarks of the per-request cost with and without app
#     metrics (router/bench_test.go: BenchmarkMetricsObserve, the bytes
#     counter is the only per-request addition) and of the CPU one flush
#     spends reading 1,000 apps' series (BenchmarkAppMetricsTotals).
#
# Environment: BENCH_PARTS ("router micro api"), BENCH_DURATION (10s), BENCH_ROUNDS
# (5), BENCH_CONNS (64), BENCH_TARGETS ("on off none"), BENCH_ADDR (127.0.0.1:
# the loopback address every listener binds), BENCH_PORT (first of 8 ports,
# 19300), DINP_BENCH_APPS (1000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=services.sh
source "$ROOT/scripts/services.sh"

PARTS=${BENCH_PARTS:-router micro api}
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNS:-64}
TARGETS=${BENCH_TARGETS:-on off none}
ADDR=${BENCH_ADDR:-127.0.0.1}
PORT=${BENCH_PORT:-19300}
HOST=bench.apps.io
PREFIX=dinpbenchm$$

TMP=$(mktemp -d /tmp/dinp-bench-metrics.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

bench_router() {
  apt_install wrk nginx-light redis-tools
  start_redis
  log "building (go build)"
  (cd "$ROOT" && go build -o "$TMP/dinp" . && go build -o "$TMP/bench" ./router/bench)

  local backend_port=$PORT
  nginx_conf "$TMP/backend" 1 "server {
    listen $ADDR:$backend_port;
    location / { default_type text/plain; return 200 \"hello, world\n\"; }
  }"
  nginx -p "$TMP/backend" -c "$TMP/backend/nginx.conf" & PIDS+=($!)

  "$TMP/bench" routes -prefix "$PREFIX" -host "$HOST" -backend "$ADDR:$backend_port"
  declare -gA RPORT RSTATUS RPID
  local i=1 t flags
  for t in $TARGETS; do
    case $t in
      on) flags=() ;;
      off) flags=(--app-metrics=false) ;;
      none) flags=(--metrics=false) ;;
      *) log "unknown target $t"; exit 1 ;;
    esac
    RPORT[$t]=$((PORT + 2 * i - 1)) RSTATUS[$t]=$((PORT + 2 * i))
    "$TMP/dinp" router --addr "$ADDR:${RPORT[$t]}" --status-addr "$ADDR:${RSTATUS[$t]}" --key-prefix "$PREFIX" \
      --redis-addr 127.0.0.1:6379 --log-level warn --access-log=false "${flags[@]}" >>"$TMP/router-$t.log" 2>&1 &
    RPID[$t]=$!
    PIDS+=($!)
    i=$((i + 1))
  done
  for t in $TARGETS; do
    wait_for 20 curl -fs "http://$ADDR:${RSTATUS[$t]}/health" || { log "router $t not ready"; cat "$TMP/router-$t.log" >&2; exit 1; }
    out=$(curl -fs -H "Host: $HOST" "http://$ADDR:${RPORT[$t]}/") && [ "$out" = "hello, world" ] ||
      { log "router $t answered '${out:-}'"; exit 1; }
  done

  cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
  local clk round before n
  clk=$(getconf CLK_TCK)
  log "wrk -t2 -c$CONNS -d$DURATION --latency, $ROUNDS alternating rounds of: $TARGETS"
  for round in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
      f=$TMP/out-$t-$round.txt
      before=$(cpu_ticks "${RPID[$t]}")
      wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $HOST" "http://$ADDR:${RPORT[$t]}/" >"$f"
      echo $(( $(cpu_ticks "${RPID[$t]}") - before )) >"$TMP/cpu-$t-$round.txt"
      printf '  round %s %-5s %s req/s\n' "$round" "$t" "$(awk '/^Requests\/sec/ {print $2}' "$f")" >&2
    done
  done

  to_ms() { awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'; }
  median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
  fig1() { # fig1 TARGET ROUND rps|p99|cpu
    local f=$TMP/out-$1-$2.txt
    case $3 in
      rps) awk '/^Requests\/sec/ {print $2}' "$f" ;;
      p99) to_ms "$(awk '$1 == "99%" {print $2}' "$f")" ;;
      cpu) n=$(awk '/requests in/ {print $1}' "$f")
           awk -v t="$(cat "$TMP/cpu-$1-$2.txt")" -v hz="$clk" -v n="$n" 'BEGIN {printf "%.2f\n", t / hz * 1e6 / n}' ;;
    esac
  }
  fig() { for r in $(seq "$ROUNDS"); do fig1 "$1" "$r" "$2"; done | median; }
  # The on/off ratio of each round (the two ran back to back), median.
  ratio_med() { for r in $(seq "$ROUNDS"); do awk -v a="$(fig1 "$1" "$r" "$3")" -v b="$(fig1 "$2" "$r" "$3")" 'BEGIN {print a / b}'; done | median; }

  echo
  echo "== (a) router throughput, app metrics on vs off: wrk -t2 -c$CONNS -d$DURATION, median of $ROUNDS alternating rounds"
  echo "   ($(nproc) cores shared by wrk, the nginx backend, the routers and whatever else runs here)"
  printf '%-6s %-34s %12s %10s %12s\n' target flags "requests/s" "p99 ms" "CPU us/req"
  for t in $TARGETS; do
    case $t in on) fl="(default: --app-metrics)" ;; off) fl="--app-metrics=false" ;; none) fl="--metrics=false" ;; esac
    printf '%-6s %-34s %12.0f %10.3f %12.2f\n' "$t" "$fl" "$(fig "$t" rps)" "$(fig "$t" p99)" "$(fig "$t" cpu)"
  done
  has() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
  rounds() { for r in $(seq "$ROUNDS"); do awk -v a="$(fig1 "$1" "$r" "$3")" -v b="$(fig1 "$2" "$r" "$3")" 'BEGIN {printf "%.3f ", a / b}'; done; }
  verdict() { # verdict A B: A's requests/s and CPU/request against B's
    local rps cpu
    rps=$(ratio_med "$1" "$2" rps) cpu=$(ratio_med "$1" "$2" cpu)
    echo "$1/$2 requests/s: median ratio $rps ($(awk -v r="$rps" 'BEGIN {printf "%+.1f %%", (r - 1) * 100}'); rounds: $(rounds "$1" "$2" rps)),"
    echo "   CPU us/req: median ratio $cpu ($(awk -v r="$cpu" 'BEGIN {printf "%+.1f %%", (r - 1) * 100}'); rounds: $(rounds "$1" "$2" cpu))"
  }
  if has on && has off; then
    echo "app metrics cost (target: ≤ 3 % fewer requests/s):"
    verdict on off
    ROUTER_CPU_ON=$(fig on cpu)
  fi
  if has on && has none; then
    echo "all per-app counting (Prometheus series + app metrics) against none:"
    verdict on none
  fi
  if [ -n "${RSTATUS[on]:-}" ]; then
    flushes=$(curl -fs "http://$ADDR:${RSTATUS[on]}/metrics" | awk '/^dinp_router_app_metrics_flushes_total/ {print $1 "=" $2}' | tr '\n' ' ')
    echo "router 'on' wrote to Redis: ${flushes:-nothing}; ring $PREFIX:metrics:bench:10s is $(redis-cli -h 127.0.0.1 strlen "$PREFIX:metrics:bench:10s") bytes"
  fi
}

bench_micro() {
  echo
  echo "== (c) per-request and per-flush CPU (go test -bench, median of 5; GOMAXPROCS $(nproc))"
  cd "$ROOT"
  go test -count=5 -run '^$' -bench 'BenchmarkMetricsObserve|BenchmarkAppMetricsTotals' -benchmem ./router/ |
    awk '/^Benchmark/ {n = $1; v[n] = v[n] " " $3} END {
      for (n in v) { k = split(substr(v[n], 2), a, " "); asort(a); printf "%-48s %10.1f ns/op\n", n, a[int((k + 1) / 2)] } }' |
    sort | tee "$TMP/micro.txt"
  echo "(a flush reads every app's series once per 10 s: BenchmarkAppMetricsTotals / 10 s is its share of one core)"
  local on off mode
  for mode in seq parallel; do
    on=$(awk -v m="$mode" 'index($1, "/" m "/prometheus+app-") {print $2}' "$TMP/micro.txt")
    off=$(awk -v m="$mode" 'index($1, "/" m "/prometheus-") {print $2}' "$TMP/micro.txt")
    printf 'app metrics add %s ns per request to the counting (%s)' "$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.1f", a - b}')" \
      "$([ $mode = seq ] && echo "one goroutine" || echo "every P on one app's counters")"
    if [ -n "${ROUTER_CPU_ON:-}" ]; then
      printf ' = %s %% of the router'"'"'s %s us CPU per request in (a)' \
        "$(awk -v a="$on" -v b="$off" -v c="$ROUTER_CPU_ON" 'BEGIN {printf "%.2f", (a - b) / (c * 1000) * 100}')" "$ROUTER_CPU_ON"
    fi
    echo
  done
  # Instruction counts do not depend on the machine's load: callgrind over
  # the sequential benchmark at two iteration counts, the difference per
  # iteration (async preemption off: its signals trip callgrind).
  apt_install valgrind
  go test -c -o "$TMP/router.test" ./router/
  ir() { # ir BENCH N — instructions of the whole run
    GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$TMP/router.test" -test.run '^$' \
      -test.bench "BenchmarkMetricsObserve/seq/$1\$" -test.benchtime="$2"x -test.cpu 1 2>&1 >/dev/null | awk '/Collected :/ {print $4}'
  }
  local b ir_off ir_on
  for b in prometheus 'prometheus\+app'; do
    eval "ir_$([ "$b" = prometheus ] && echo off || echo on)=$(( ($(ir "$b" 300000) - $(ir "$b" 100000)) / 200000 ))"
  done
  echo "instructions per request (callgrind): counting without app metrics $ir_off, with $ir_on: app metrics add $((ir_on - ir_off))"
}

bench_api() {
  start_services
  echo
  echo "== (b) GET /api/v1/apps/{app}/metrics with ${DINP_BENCH_APPS:-1000} apps reporting (dash/metrics_bench_test.go)"
  cd "$ROOT"
  DINP_BENCH=1 go test -count=1 -timeout 30m -run '^TestMetricsAPIBench$' -v ./dash/ |
    sed -n 's/^ *metrics_bench_test.go:[0-9]*: //p; /^\(ok\|FAIL\|---\)/p'
}

for part in $PARTS; do
  case $part in
    router) bench_router ;;
    micro) bench_micro ;;
    api) bench_api ;;
    *) log "unknown part $part"; exit 1 ;;
  esac
done
