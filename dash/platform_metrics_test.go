package dash

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// TestPlatformMetrics: /metrics answers only with the cluster token and
// counts API requests by route group and status class, failed logins and
// open log follows.
func TestPlatformMetrics(t *testing.T) {
	e := newEnv(t, nil)
	url := e.url + "/metrics"
	if st, _ := e.call("GET", "/metrics", e.admin.Token, nil, nil); st != http.StatusUnauthorized {
		t.Fatalf("GET /metrics with a user's token: %d, want 401", st)
	}
	m := func(series string) float64 { return testenv.Metric(t, url, clusterToken, series) }
	if st, _ := e.call("POST", "/api/v1/login", "", map[string]string{"user": e.admin.User, "password": "wrong"}, nil); st != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %d", st)
	}
	e.createApp("web")
	for range 2 {
		if st, _ := e.call("GET", "/api/v1/apps/web", e.admin.Token, nil, nil); st != http.StatusOK {
			t.Fatalf("GET app: %d", st)
		}
	}
	if st, _ := e.call("GET", "/api/v1/apps/nope", e.admin.Token, nil, nil); st != http.StatusNotFound {
		t.Fatalf("GET missing app: %d", st)
	}
	for series, want := range map[string]float64{
		`dinp_dash_requests_total{class="2xx",group="apps"}`:     3, // create, 2 reads
		`dinp_dash_requests_total{class="4xx",group="apps"}`:     1,
		`dinp_dash_requests_total{class="4xx",group="auth"}`:     1,
		`dinp_dash_requests_total{class="4xx",group="other"}`:    1, // the refused scrape
		`dinp_dash_request_duration_seconds_count{group="apps"}`: 4,
		"dinp_dash_login_failures_total":                         1,
		"dinp_dash_log_follows":                                  0,
	} {
		if got := m(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/apps/web/logs?follow=1&lines=1", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: %s", resp.Status)
	}
	testenv.WaitFor(t, "one log follow counted", 10*time.Second, func() bool { return m("dinp_dash_log_follows") == 1 })
	cancel()
	testenv.WaitFor(t, "the follow's end counted", 10*time.Second, func() bool {
		return m("dinp_dash_log_follows") == 0 && m(`dinp_dash_requests_total{class="2xx",group="logs"}`) == 1
	})
}
