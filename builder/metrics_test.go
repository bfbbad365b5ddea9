package builder

import (
	"net/http"
	"testing"

	"github.com/dinp/dinp/common/testenv"
)

// TestBuilderMetrics: /metrics answers only with the cluster token and
// counts a refused build by result and stack, with its duration.
func TestBuilderMetrics(t *testing.T) {
	e := startEnv(t, nil)
	url := "http://" + e.b.Addr() + "/metrics"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without the token: %s, want 401", resp.Status)
	}
	m := func(series string) float64 { return testenv.Metric(t, url, testToken, series) }
	if got := m("dinp_builder_queue_length"); got != 0 {
		t.Fatalf("queue length before any build: %v", got)
	}
	if code, _, _ := e.post(t, "other", tarGz(t, file("README", "hi", 0o644)), testToken); code != 422 {
		t.Fatalf("build without a command: %d, want 422", code)
	}
	if got := m(`dinp_builder_builds_total{result="failed",stack="none"}`); got != 1 {
		t.Errorf("failed builds: %v, want 1", got)
	}
	if got := m("dinp_builder_build_duration_seconds_count"); got != 1 {
		t.Errorf("build durations observed: %v, want 1", got)
	}
	if got := m("dinp_builder_push_failures_total"); got != 0 {
		t.Errorf("push failures: %v, want 0", got)
	}
}
