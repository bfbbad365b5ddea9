package registry

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// TestRegistryMetrics: /metrics answers only with the cluster token and
// counts requests by method and status class, refused token requests and
// garbage collections.
func TestRegistryMetrics(t *testing.T) {
	r := start(t, func(c *Config) {
		c.MySQLDSN = "dinp:dinp@tcp(127.0.0.1:1)/nope" // GC fails
		c.GCInterval = 0
	})
	base := "http://" + r.Addr()
	get := func(path string, basic bool) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if basic {
			req.SetBasicAuth("dinp", "wrong")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path  string
		basic bool
	}{{"/metrics", false}, {"/v2/", false}, {TokenPath, true}} {
		if got := get(c.path, c.basic); got != http.StatusUnauthorized {
			t.Fatalf("GET %s: %d, want 401", c.path, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.GC(ctx); err == nil {
		t.Fatal("GC without MySQL succeeded")
	}
	m := func(series string) float64 { return testenv.Metric(t, base+"/metrics", testToken, series) }
	if got := m(`dinp_registry_requests_total{class="4xx",method="GET"}`); got != 3 {
		t.Errorf("GET 4xx requests: %v, want 3", got)
	}
	if got := m(`dinp_registry_requests_total{class="2xx",method="GET"}`); got != 1 {
		t.Errorf("GET 2xx requests: %v, want 1 (the previous scrape)", got)
	}
	if got := m("dinp_registry_token_refused_total"); got != 1 {
		t.Errorf("refused token requests: %v, want 1", got)
	}
	if got := m(`dinp_registry_gc_runs_total{result="error"}`); got != 1 {
		t.Errorf("failed GC runs: %v, want 1", got)
	}
}
