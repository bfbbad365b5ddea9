package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// metricsBody is a fixed answer of GET /api/v1/apps/web/metrics: six steps,
// one without traffic, two instances (one started late) and a deploy.
const metricsBody = `{"app":"web","window":"1h","step_seconds":10,
 "time":[1700000000,1700000010,1700000020,1700000030,1700000040,1700000050],
 "requests_per_sec":[0,2,4,null,6,8],
 "rate_4xx":[0,0,1,null,0,0], "rate_5xx":[0,0,0,null,0.5,0],
 "p50_ms":[null,3,3.5,null,4,4.2], "p95_ms":[null,9,9,null,10,11], "p99_ms":[null,20,22,null,30,41.5],
 "bytes_per_sec":[0,200,400,null,600,800],
 "instances":[
  {"id":"0123456789abcdef","node":"n1","release":3,"cpu_percent":[1,2,3,4,5,6],"memory_bytes":[10485760,10485760,20971520,20971520,31457280,31457280],"memory_limit":134217728,"restarts":1},
  {"id":"fedcba9876543210","node":"n2","release":3,"cpu_percent":[null,null,null,2,2,2],"memory_bytes":[null,null,null,5242880,5242880,5242880],"memory_limit":134217728,"restarts":0}],
 "events":[{"time":1700000030,"kind":"deploy","message":"release v3 rolled out"}],
 "summary":{"requests_per_sec":8,"p50_ms":4.2,"p99_ms":41.5,"error_rate":0.025,"requests":200,"memory_bytes":36700160,"memory_limit":268435456}}`

// runMetrics runs `dinp metrics args…` against a fake dash answering body,
// and returns the output and the query the fake saw.
func runMetrics(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/apps/web/metrics" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":{"code":"not_found","message":"no such app"}}`, http.StatusNotFound)
			return
		}
		query = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(metricsBody))
	}))
	defer srv.Close()
	t.Setenv("DINP_CLIENT_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("DINP_TARGET", srv.URL)
	t.Setenv("DINP_TOKEN", "tok")
	cmd := metricsCommand(&appFlags{})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), query, err
}

// TestMetricsCommand: `dinp metrics web` prints the headline, a sparkline
// per series and per instance (gaps as spaces), and the deploy.
func TestMetricsCommand(t *testing.T) {
	out, query, err := runMetrics(t, "web", "--window", "6h")
	if err != nil {
		t.Fatal(err)
	}
	if query != "window=6h" {
		t.Errorf("asked for %q, want window=6h", query)
	}
	for _, want := range []string{
		"web: last 1h at 10 s steps",
		"8.00 req/s · p50 4.20 ms · p99 41.5 ms · 2.50% 5xx · 200 requests in 1h · memory 35.0 MB of 256 MB",
		"SPARKLINE 22:13–22:14 UTC",
		// 0 2 4 _ 6 8 over a peak of 8: ▁ ▃ ▅ gap ▆ █
		"▁▃▅ ▆█",
		// p99 has no value in the first step: the line starts with a space.
		" ▄▅ ▆█",
		"0123456789ab  n1",
		"6.00%", "30.0 MB/128 MB",
		// The second instance reported only from the fourth step.
		"   ███",
		"22:13:50  deploy   release v3 rolled out",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	rows := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			rows[f[0]] = l
		}
	}
	if !strings.Contains(rows["requests/s"], "8.00") || !strings.HasSuffix(rows["requests/s"], "▁▃▅ ▆█") {
		t.Errorf("requests row: %q", rows["requests/s"])
	}
}

// TestMetricsCommandJSON: --json prints the API's body as it is.
func TestMetricsCommandJSON(t *testing.T) {
	out, query, err := runMetrics(t, "--json", "web")
	if err != nil {
		t.Fatal(err)
	}
	if query != "window=1h" {
		t.Errorf("asked for %q, want the default window=1h", query)
	}
	var got, want any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	json.Unmarshal([]byte(metricsBody), &want)
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("printed\n%s\nwant\n%s", g, w)
	}
}

// TestMetricsCommandErrors: a bad window is a usage error before any
// request; an unknown app is the API's error.
func TestMetricsCommandErrors(t *testing.T) {
	_, query, err := runMetrics(t, "web", "--window", "2h")
	if ee, ok := err.(*exitError); !ok || ee.code != exitUsage || query != "" {
		t.Errorf("--window 2h: %v (query %q)", err, query)
	}
	_, _, err = runMetrics(t, "nope")
	if ae, ok := err.(*apiError); !ok || ae.Status != http.StatusNotFound {
		t.Errorf("unknown app: %v", err)
	}
}

func TestSpark(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		vals  []*float64
		width int
		want  string
	}{
		{nil, 10, ""},
		{[]*float64{f(0), f(0)}, 10, "▁▁"},
		{[]*float64{f(0), f(7)}, 10, "▁█"},
		{[]*float64{nil, f(1), nil}, 10, " █"},
		// Eight values in four buckets: averages 1, 3, 5, 7.
		{[]*float64{f(0), f(2), f(2), f(4), f(4), f(6), f(6), f(8)}, 4, "▂▄▆█"},
	} {
		if got := spark(tc.vals, tc.width); got != tc.want {
			t.Errorf("spark(%v, %d) = %q, want %q", tc.vals, tc.width, got, tc.want)
		}
	}
}
