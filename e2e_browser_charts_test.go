package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dinp/dinp/dash/api"
)

// TestBrowserCharts drives known traffic through the real router to an app
// with two instances and looks at the dashboard in headless Chromium: the
// app page draws requests, latency, errors, memory and CPU per instance with
// data and the deploy marked; the card refreshes by itself when more traffic
// comes; the window selector works; the app list has the app's sparkline.
// Screenshots land in artifacts/screenshots/charts-*.png.
func TestBrowserCharts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	chromium := browserChromium(t)
	p := startPlatform(t)
	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(`{"name":"hello","instances":2,"memory_mb":64,"health_path":"/healthz"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.api("POST", "/api/v1/apps/hello/deploy", bytes.NewReader(helloTarball(t)), "application/gzip", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "two instances answering through the router", func() error {
		seen, err := p.instancesAnswering("hello", 10)
		if err == nil && len(seen) != 2 {
			err = fmt.Errorf("answered by %d instances", len(seen))
		}
		return err
	})
	// Known traffic: 300 answers of 200 and 30 of 404.
	send := func(ok, missing int) {
		t.Helper()
		for i := 0; i < ok+missing; i++ {
			path := "/"
			if i >= ok {
				path = "/missing"
			}
			req, _ := http.NewRequest("GET", "http://"+p.router+path, nil)
			req.Host = "hello." + p.domain
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := map[bool]int{true: 200, false: 404}[path == "/"]; resp.StatusCode != want {
				t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
			}
		}
	}
	send(300, 30)
	var m api.AppMetrics
	waitFor(t, 60*time.Second, "the traffic and both instances in the metrics API", func() error {
		if _, err := p.api("GET", "/api/v1/apps/hello/metrics?window=1h", nil, "", &m); err != nil {
			return err
		}
		if m.Summary.Requests < 330 || len(m.Instances) != 2 {
			return fmt.Errorf("%d requests, %d instances", m.Summary.Requests, len(m.Instances))
		}
		return nil
	})

	admin := p.admin()
	base := "http://" + p.dash
	step := browserOpen(t, chromium, 120*time.Second)
	wait := func(what, expr string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error { return browserWait(ctx, 60*time.Second, what, expr) })
	}
	// drawn counts the lines and dots of a chart (a value alone between
	// gaps is a dot, as traffic within one step is); points is how many
	// values the server drew in it.
	drawn := func(id string) string {
		return `document.querySelectorAll("#` + id + ` path.line, #` + id + ` circle.dot").length`
	}
	points := func(id string) string {
		return `Number(document.getElementById("` + id + `").dataset.points)`
	}
	step("log in",
		chromedp.Navigate(base+"/apps/hello"),
		chromedp.WaitVisible("#user", chromedp.ByID),
		chromedp.SendKeys("#user", admin.User, chromedp.ByID),
		chromedp.SendKeys("#password", admin.Password, chromedp.ByID),
		chromedp.Click("#login", chromedp.ByID),
		chromedp.WaitVisible("#charts", chromedp.ByID),
	)
	var counts map[string]int
	var headline string
	step("the app page draws every chart with data",
		wait("charts with data", drawn("chart-requests")+` >= 1 && `+drawn("chart-memory")+` >= 2`),
		chromedp.Evaluate(`({requests: `+drawn("chart-requests")+`, latency: `+drawn("chart-latency")+
			`, errors: `+drawn("chart-errors")+`, memory: `+drawn("chart-memory")+`, cpu: `+drawn("chart-cpu")+`, points: `+points("chart-requests")+
			`, deploys: document.querySelectorAll("#chart-requests g.event.ev-deploy").length, empty: document.querySelectorAll(".nodata").length})`, &counts),
		chromedp.Text("#chart-requests figcaption", &headline, chromedp.ByQuery),
		browserShot(t, "charts-app"),
	)
	t.Logf("charts: %v; requests headline %q", counts, headline)
	for chart, min := range map[string]int{"requests": 1, "latency": 2, "errors": 2, "memory": 2, "cpu": 2} {
		if counts[chart] < min {
			t.Errorf("%s chart draws %d lines or dots, want at least %d (one per series)", chart, counts[chart], min)
		}
	}
	if counts["deploys"] < 1 {
		t.Errorf("the deploy is not marked on the requests chart")
	}
	if counts["empty"] != 0 {
		t.Errorf("%d charts say they have no data", counts["empty"])
	}

	// More traffic in later steps: the card redraws itself (every 10 s)
	// with them, without a reload.
	send(600, 0)
	step("the charts refresh live",
		wait("more requests steps drawn", points("chart-requests")+` > `+strconv.Itoa(counts["points"])),
		browserShot(t, "charts-app-refreshed"),
	)
	step("the 6h window",
		chromedp.Click(`#charts a[data-window="6h"]`, chromedp.ByQuery),
		wait("the 6h card", `!!document.querySelector('#charts a.current[data-window="6h"]') && `+drawn("chart-requests")+` >= 1`),
		browserShot(t, "charts-app-6h"),
	)
	var spark int
	step("the app list has the app's sparkline",
		chromedp.Navigate(base+"/apps"),
		chromedp.WaitVisible("#apps", chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll("#apps td.spark svg.spark polyline").length`, &spark),
		browserShot(t, "charts-apps"),
	)
	if spark != 1 {
		t.Errorf("%d sparklines on the app list, want 1", spark)
	}
	// The CLI shows the same figures from the real API.
	home := t.TempDir()
	cli := &cliRunner{t: t, bin: p.cmd.Path, env: append(os.Environ(), "HOME="+home,
		"DINP_CLIENT_CONFIG="+filepath.Join(home, "client.json"), "DINP_TARGET=http://"+p.dash, "DINP_TOKEN="+p.token)}
	out := cli.ok("metrics", "hello")
	t.Logf("dinp metrics hello:\n%s", out)
	for _, want := range []string{"hello: last 1h at 10 s steps", "requests/s", "p99 ms", "INSTANCE", "█"} {
		if !strings.Contains(out, want) {
			t.Errorf("dinp metrics lacks %q", want)
		}
	}
	// --json is the API's body: the 1h window (10 s steps) has counted every
	// request by now; the 24h window is served at 1 min steps and shows
	// complete minutes only (its sums are tested in common/appmetrics).
	var fromCLI api.AppMetrics
	if err := json.Unmarshal([]byte(cli.ok("metrics", "hello", "--json")), &fromCLI); err != nil || fromCLI.Window != "1h" || fromCLI.Summary.Requests < 930 {
		t.Errorf("dinp metrics --json: %v, window %q, %d requests (want ≥ 930)", err, fromCLI.Window, fromCLI.Summary.Requests)
	}
	var day api.AppMetrics
	if err := json.Unmarshal([]byte(cli.ok("metrics", "hello", "--json", "--window", "24h")), &day); err != nil || day.Window != "24h" ||
		day.Step != 60 || len(day.Time) != 1440 {
		t.Errorf("dinp metrics --json --window 24h: %v, window %q, step %d, %d points (want 24h, 60, 1440)", err, day.Window, day.Step, len(day.Time))
	}
	step("phone width",
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(base+"/apps/hello"),
		wait("charts", drawn("chart-requests")+` >= 1`),
		browserShot(t, "charts-app-phone"),
	)
}
