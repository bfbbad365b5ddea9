package dash

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/dash/api"
	"github.com/dinp/dinp/router"
)

// TestMetricsAddUpAcrossRouters sends known requests through two real
// routers (real HTTP to real backends, and the router's own 503 for a host
// without instances), writes two instances' samples as two agents do, and
// reads the API: every figure is the sum of what both routers answered.
func TestMetricsAddUpAcrossRouters(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.addUser("alice", "alices")
	if st, code := e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "shop"}, nil); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	okBody := strings.Repeat("x", 100)
	backend := func() *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/ok":
				io.WriteString(w, okBody)
			case "/fail":
				http.Error(w, "boom", http.StatusInternalServerError)
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(s.Close)
		return s
	}
	b1, b2 := backend(), backend()
	ctx := context.Background()
	writeRoute := func(host string, rt common.Route) {
		js, _ := json.Marshal(rt)
		if err := e.rdb.HSet(ctx, e.keys.Routes(), host, js).Err(); err != nil {
			t.Fatal(err)
		}
	}
	writeRoute("shop.apps.io", common.Route{App: "shop", Release: 1, Version: 1, Backends: []common.Backend{
		{Addr: strings.TrimPrefix(b1.URL, "http://"), Instance: "i-1", Healthy: true, Release: 1},
		{Addr: strings.TrimPrefix(b2.URL, "http://"), Instance: "i-2", Healthy: true, Release: 1},
	}})
	writeRoute("shop-down.apps.io", common.Route{App: "shop", Release: 1, Version: 1})

	type routerRun struct {
		r    *router.Router
		stop func()
	}
	start := func() routerRun {
		cfg := router.DefaultConfig()
		cfg.Addr, cfg.StatusAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.RedisAddr, cfg.KeyPrefix, cfg.ClusterToken = testenv.RedisAddr(), e.keys.Prefix, clusterToken
		cfg.ResyncInterval, cfg.DrainPeriod, cfg.AccessLog = 100*time.Millisecond, 0, false
		cfg.Log = common.DiscardLogger()
		r, err := router.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return routerRun{r, testenv.Start(t, r)}
	}
	ra, rb := start(), start()
	client := &http.Client{Timeout: 5 * time.Second}
	send := func(r *router.Router, host, path string, n, want int) {
		t.Helper()
		for range n {
			req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+path, nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("%s%s: %d, want %d", host, path, resp.StatusCode, want)
			}
		}
	}
	for _, r := range []*router.Router{ra.r, rb.r} {
		testenv.WaitFor(t, "routes loaded", 10*time.Second, func() bool {
			resp, err := client.Get("http://" + r.StatusAddr() + "/health")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200 && r.Healthy()
		})
	}
	send(ra.r, "shop.apps.io", "/ok", 30, 200)
	send(ra.r, "shop.apps.io", "/missing", 5, 404)
	send(rb.r, "shop.apps.io", "/ok", 20, 200)
	send(rb.r, "shop.apps.io", "/fail", 7, 500)
	send(rb.r, "shop-down.apps.io", "/", 3, 503) // the router's own answer
	// Stopping a router writes what it counted since its last flush.
	ra.stop()
	rb.stop()
	stopStep := time.Now().Unix() / 10 * 10

	// Two agents' samples of the app's two instances.
	store := appmetrics.NewStore(e.rdb, e.keys)
	now := time.Now()
	if err := store.Flush(ctx, now, nil, []appmetrics.InstanceSample{
		{App: "shop", Instance: "i-1", Node: "n1", Release: 1, MemoryLimit: 256 << 20, Sample: appmetrics.Sample{CPUPercent: 10, Memory: 50 << 20}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := store.Flush(ctx, now, nil, []appmetrics.InstanceSample{
		{App: "shop", Instance: "i-2", Node: "n2", Release: 1, MemoryLimit: 256 << 20, Sample: appmetrics.Sample{CPUPercent: 30, Memory: 70 << 20, Restarts: 1}},
	}); err != nil {
		t.Fatal(err)
	}

	// The API serves complete steps: wait for the routers' last one to end.
	var m api.AppMetrics
	testenv.WaitFor(t, "the last flushed step served", 25*time.Second, func() bool {
		e.call("GET", "/api/v1/apps/shop/metrics?window=1h", alice, nil, &m)
		return m.Time[len(m.Time)-1] >= stopStep
	})
	const total, n4xx, n5xx = 65, 5, 10
	sum := func(s []*float64) float64 {
		var v float64
		for _, p := range s {
			if p != nil {
				v += *p * float64(m.Step)
			}
		}
		return v
	}
	if m.Summary.Requests != total || sum(m.RequestsPerSec) != total || sum(m.Rate4xx) != n4xx || sum(m.Rate5xx) != n5xx {
		t.Fatalf("requests %d (series %v), 4xx %v, 5xx %v; want %d, %d, %d",
			m.Summary.Requests, sum(m.RequestsPerSec), sum(m.Rate4xx), sum(m.Rate5xx), total, n4xx, n5xx)
	}
	if want := float64(n5xx) / total; m.Summary.ErrorRate != want {
		t.Fatalf("error rate %v, want %v", m.Summary.ErrorRate, want)
	}
	if b := sum(m.BytesPerSec); b < 50*float64(len(okBody)) {
		t.Fatalf("bytes %v, want at least the 50 bodies of /ok (%d)", b, 50*len(okBody))
	}
	var p99 *float64
	for _, p := range m.P99ms {
		if p != nil {
			p99 = p
		}
	}
	if p99 == nil || *p99 <= 0 || *p99 > 5000 {
		t.Fatalf("p99 %v: want a latency from the merged histograms", deref(p99))
	}
	if m.Summary.MemoryBytes != 120<<20 || m.Summary.MemoryLimit != 512<<20 {
		t.Fatalf("memory %d of %d, want 120 MB of 512", m.Summary.MemoryBytes, m.Summary.MemoryLimit)
	}
	if m.Instances[0].ID != "i-1" || m.Instances[1].Node != "n2" {
		t.Fatalf("instances %+v", m.Instances)
	}
}
