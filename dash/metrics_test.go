package dash

import (
	"context"
	"testing"
	"time"

	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/dash/api"
)

// TestMetricsAPI serves what the store holds: counts written by two
// writers for the last complete step come out as rates and percentiles,
// instances with their memory, the app's events in the window; a bad
// window is a 400 and another team's app a 404.
func TestMetricsAPI(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.addUser("alice", "alices")
	mallory := e.addUser("mallory", "mal")
	if st, code := e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "shop"}, nil); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	store := appmetrics.NewStore(e.rdb, e.keys)
	ctx := context.Background()
	// The last complete 10 s step, as the routers flush it.
	at := time.Unix(time.Now().Unix()/10*10-5, 0)
	a := &appmetrics.Traffic{Bytes: 4000}
	a.Classes[2], a.Classes[5] = 90, 10
	a.Hist[appmetrics.Bucket(3*time.Millisecond)] = 100
	b := &appmetrics.Traffic{Bytes: 1000}
	b.Classes[4] = 100
	b.Hist[appmetrics.Bucket(3*time.Millisecond)] = 100
	for _, tr := range []*appmetrics.Traffic{a, b} {
		if err := store.Flush(ctx, at, map[string]*appmetrics.Traffic{"shop": tr}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Flush(ctx, at, nil, []appmetrics.InstanceSample{{App: "shop", Instance: "i-1", Node: "n1", Release: 1,
		MemoryLimit: 128 << 20, Sample: appmetrics.Sample{CPUPercent: 12.5, Memory: 40 << 20}}}); err != nil {
		t.Fatal(err)
	}

	var m api.AppMetrics
	// A request may cross a step boundary: then the step is one back.
	for range 2 {
		if st, code := e.call("GET", "/api/v1/apps/shop/metrics", alice, nil, &m); st != 200 {
			t.Fatalf("metrics: %d %s", st, code)
		}
		if m.Time[len(m.Time)-1] == at.Unix()/10*10 {
			break
		}
	}
	n := len(m.Time)
	if m.App != "shop" || m.Window != "1h" || m.Step != 10 || n != 360 || len(m.RequestsPerSec) != n || len(m.P99ms) != n {
		t.Fatalf("shape: app %q window %q step %d, %d times, %d rates", m.App, m.Window, m.Step, n, len(m.RequestsPerSec))
	}
	last := n - 1
	if m.Time[last] != at.Unix()/10*10 {
		t.Fatalf("last step %d, want %d", m.Time[last], at.Unix()/10*10)
	}
	if r := m.RequestsPerSec[last]; r == nil || *r != 20 || *m.Rate4xx[last] != 10 || *m.Rate5xx[last] != 1 || *m.BytesPerSec[last] != 500 {
		t.Fatalf("last step: %v req/s, 4xx %v, 5xx %v, %v B/s; want 20, 10, 1, 500", deref(r), deref(m.Rate4xx[last]), deref(m.Rate5xx[last]), deref(m.BytesPerSec[last]))
	}
	if p := m.P50ms[last]; p == nil || *p <= 2.5 || *p > 5 {
		t.Fatalf("p50 %v, want within (2.5, 5] ms", deref(p))
	}
	if m.RequestsPerSec[0] != nil || m.P50ms[0] != nil {
		t.Fatal("a step nobody reported is not null")
	}
	if m.Summary.Requests != 200 || m.Summary.ErrorRate != 0.05 || m.Summary.RequestsPerSec != 20 {
		t.Fatalf("summary %+v, want 200 requests, error rate 0.05, 20/s", m.Summary)
	}
	if len(m.Instances) != 1 || m.Instances[0].ID != "i-1" || deref(m.Instances[0].MemoryBytes[last]) != 40<<20 ||
		deref(m.Instances[0].CPUPercent[last]) != 12.5 || m.Summary.MemoryBytes != 40<<20 || m.Summary.MemoryLimit != 128<<20 {
		t.Fatalf("instances %+v, summary %+v", m.Instances, m.Summary)
	}
	if len(m.Events) == 0 || m.Events[0].Kind != "create" {
		t.Fatalf("events %+v, want the app's creation", m.Events)
	}

	// The day is served by minute, complete minutes only: the minute of at
	// may still be running.
	if err := store.Flush(ctx, at.Add(-time.Minute), map[string]*appmetrics.Traffic{"shop": b}, nil); err != nil {
		t.Fatal(err)
	}
	var day api.AppMetrics
	if st, _ := e.call("GET", "/api/v1/apps/shop/metrics?window=24h", alice, nil, &day); st != 200 || day.Step != 60 || len(day.Time) != 1440 ||
		(day.Summary.Requests != 100 && day.Summary.Requests != 300) {
		t.Fatalf("24h: %d step %d, %d steps, %d requests", st, day.Step, len(day.Time), day.Summary.Requests)
	}
	for _, w := range []string{"2h", "1d", "", "1h&window=6h"} {
		if st, code := e.call("GET", "/api/v1/apps/shop/metrics?window="+w, alice, nil, nil); st != 400 || code != "invalid_window" {
			// A repeated parameter: gin takes the first (1h), which is valid.
			if w == "1h&window=6h" && st == 200 {
				continue
			}
			t.Fatalf("window %q: %d %s, want 400 invalid_window", w, st, code)
		}
	}
	if st, code := e.call("GET", "/api/v1/apps/shop/metrics", mallory, nil, nil); st != 404 || code != "not_found" {
		t.Fatalf("another team's app: %d %s, want 404", st, code)
	}
}

func deref(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}
