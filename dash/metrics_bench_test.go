package dash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/dash/api"
)

// TestMetricsAPIBench is the benchmark behind scripts/bench-metrics.sh
// (DINP_BENCH=1): DINP_BENCH_APPS (1,000) apps with two instances each
// report an hour of 10 s steps through the real writer (the routers' and
// agents' Store.Flush); then GET /apps/{app}/metrics of random apps is
// timed for each window. It prints the figures (target: 1h p99 ≤ 50 ms),
// the Redis memory the rings take per app, and asserts nothing about time.
func TestMetricsAPIBench(t *testing.T) {
	if os.Getenv("DINP_BENCH") == "" {
		t.Skip("benchmark: run scripts/bench-metrics.sh (DINP_BENCH=1)")
	}
	napps := 1000
	if n, err := strconv.Atoi(os.Getenv("DINP_BENCH_APPS")); err == nil && n > 0 {
		napps = n
	}
	e := newEnv(t, func(c *Config) {
		c.TeamLimits.MaxApps, c.TeamLimits.MaxInstances, c.TeamLimits.MaxMemoryMB = napps+10, 10*napps, 1<<40
	})
	ctx := context.Background()
	apps := make([]string, napps)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range apps {
		apps[i] = fmt.Sprintf("app%04d", i)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			e.createApp(apps[i])
		})
	}
	wg.Wait()

	memBefore := usedMemory(t, e)
	store := appmetrics.NewStore(e.rdb, e.keys)
	now := time.Now()
	steps := appmetrics.FineSlots
	if n, err := strconv.Atoi(os.Getenv("DINP_BENCH_STEPS")); err == nil && n > 0 && n < steps {
		steps = n // a quicker, partial seeding (profiling)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seedStart := time.Now()
	for s := steps; s >= 1; s-- {
		at := now.Add(-time.Duration(s*appmetrics.FineStep) * time.Second)
		traffic := make(map[string]*appmetrics.Traffic, napps)
		samples := make([]appmetrics.InstanceSample, 0, 2*napps)
		for _, app := range apps {
			tr := &appmetrics.Traffic{}
			tr.Classes[2] = uint64(100 + rng.IntN(900))
			tr.Classes[4] = uint64(rng.IntN(20))
			tr.Classes[5] = uint64(rng.IntN(5))
			n := tr.Requests()
			tr.Hist[2], tr.Hist[4], tr.Hist[6] = n/2, n/3, n-n/2-n/3
			tr.Bytes = int64(n) * 2048
			traffic[app] = tr
			for k := range 2 {
				samples = append(samples, appmetrics.InstanceSample{App: app, Instance: app + "-i" + strconv.Itoa(k), Node: "n" + strconv.Itoa(k),
					Release: 1, MemoryLimit: 256 << 20, Sample: appmetrics.Sample{CPUPercent: rng.Float64() * 100, Memory: int64(50+rng.IntN(50)) << 20}})
			}
		}
		if err := store.Flush(ctx, at, traffic, samples); err != nil {
			t.Fatal(err)
		}
	}
	seeded := time.Since(seedStart)
	memAfter := usedMemory(t, e)
	t.Logf("seeded %d apps × 2 instances × %d steps of 10 s through Store.Flush in %s (%.1f ms per 10 s flush of all apps)",
		napps, steps, seeded.Round(time.Millisecond), float64(seeded.Milliseconds())/float64(steps))
	t.Logf("Redis memory for their rings: %.1f MiB, %.1f KiB per app with 2 instances (1 h written: the 1 min rings are partly filled)",
		float64(memAfter-memBefore)/(1<<20), float64(memAfter-memBefore)/float64(napps)/1024)

	token := e.admin.Token
	if f := os.Getenv("DINP_BENCH_PROFILE"); f != "" { // a CPU profile of the timed part
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	runtime.GC()    // the seeding's garbage is not the endpoint's
	for range 100 { // warm-up: connections, caches
		e.call("GET", "/api/v1/apps/"+apps[rng.IntN(napps)]+"/metrics", token, nil, nil)
	}
	for _, window := range []string{"1h", "6h", "24h", "app"} {
		n := 1000
		if window != "1h" {
			n = 300
		}
		path := "/metrics?window=" + window
		if window == "app" { // the baseline: GET /apps/{app}, no metrics
			path = ""
		}
		lat := make([]time.Duration, 0, n)
		for range n {
			app := apps[rng.IntN(napps)]
			var m api.AppMetrics
			var out any = &m
			if path == "" {
				out = new(map[string]any)
			}
			start := time.Now()
			if st, code := e.call("GET", "/api/v1/apps/"+app+path, token, nil, out); st != 200 {
				t.Fatalf("GET metrics: %d %s", st, code)
			}
			lat = append(lat, time.Since(start))
			if window == "1h" && (m.Summary.Requests == 0 || len(m.Instances) != 2) {
				t.Fatalf("%s: no data (%d requests, %d instances)", app, m.Summary.Requests, len(m.Instances))
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Microsecond) }
		target := ""
		if window == "1h" {
			target = " (target p99 ≤ 50ms)"
		}
		t.Logf("GET /api/v1/apps/{app}%s, %d apps reporting, %d requests: p50 %s p99 %s max %s%s",
			path, napps, n, p(.5), p(.99), lat[len(lat)-1].Round(time.Microsecond), target)
	}
	// The Redis part alone: one pipelined round trip (app ring, instances
	// and their rings through the read script).
	lat := make([]time.Duration, 0, 1000)
	for range 1000 {
		start := time.Now()
		if _, err := store.Read(ctx, apps[rng.IntN(napps)], appmetrics.FineStep, appmetrics.FineSlots, time.Now()); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("of which Store.Read (1h, Redis round trip and decoding): p50 %s p99 %s",
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))
	d, err := New(e.cfg)
	if err == nil {
		d.ln.Close()
		start := time.Now()
		rates, err := d.svc.requestSparklines(ctx, apps)
		if err != nil || len(rates) != napps {
			t.Fatalf("sparklines: %v (%d)", err, len(rates))
		}
		t.Logf("requestSparklines of all %d apps (the Cluster page): %s", napps, time.Since(start).Round(time.Microsecond))
		d.svc.rdb.Close()
	}
}

func usedMemory(t *testing.T, e *env) int64 {
	info, err := e.rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
