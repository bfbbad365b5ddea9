package dash

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/dash/api"
)

func fp(v float64) *float64 { return &v }

// steps returns n step starts from t0, step seconds apart.
func steps(t0 int64, n int, step int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = t0 + int64(i)*step
	}
	return out
}

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct {
		max       float64
		top, step float64
		label     string // of the top tick
	}{
		{0, 1, 0.25, "1.00"},
		{-3, 1, 0.25, "1.00"},
		{3.7, 4, 1, "4"},
		{97, 100, 20, "100"},
		{101, 125, 25, "125"},
		{0.03, 0.03, 0.01, "0.03"}, {0.031, 0.04, 0.01, "0.04"},
		{512, 600, 200, "600"},
		{48000, 50000, 10000, "50k"}, {2.2, 2.5, 0.5, "2.5"},
	} {
		s := niceScale(tc.max)
		if s.Max != tc.top || s.Step != tc.step || s.label(s.Max) != tc.label {
			t.Errorf("niceScale(%v) = top %v step %v label %q, want %v %v %q", tc.max, s.Max, s.Step, s.label(s.Max), tc.top, tc.step, tc.label)
		}
		if tc.max > 0 && s.Max < tc.max {
			t.Errorf("niceScale(%v): top %v below the largest value", tc.max, s.Max)
		}
	}
}

var (
	pathRE   = regexp.MustCompile(`<path class="line s(\d)" d="([^"]*)">`)
	pointRE  = regexp.MustCompile(`([ML])([\d.]+) ([\d.]+)`)
	circleRE = regexp.MustCompile(`<circle class="dot s\d" cx="([\d.]+)" cy="([\d.]+)"`)
)

// TestChartScales: the largest value touches the top gridline, zero the
// axis, the first and last steps the plot's edges.
func TestChartScales(t *testing.T) {
	c := lineChart{Title: "Requests", Time: steps(1_700_000_000, 5, 10), Step: 10,
		Series: []chartSeries{{Label: "r", Values: []*float64{fp(0), fp(50), fp(100), fp(25), fp(75)}}}}
	svg := string(c.SVG())
	m := pathRE.FindStringSubmatch(svg)
	if m == nil {
		t.Fatalf("no line:\n%s", svg)
	}
	pts := pointRE.FindAllStringSubmatch(m[2], -1)
	if len(pts) != 5 {
		t.Fatalf("%d points, want 5: %s", len(pts), m[2])
	}
	num := func(s string) float64 { f, _ := strconv.ParseFloat(s, 64); return f }
	bottom, top := float64(chartH-chartBottom), float64(chartTop)
	if y := num(pts[0][3]); y != bottom {
		t.Errorf("0 drawn at y=%v, want the axis %v", y, bottom)
	}
	if y := num(pts[2][3]); y != top {
		t.Errorf("100 drawn at y=%v, want the top %v", y, top)
	}
	if y := num(pts[1][3]); y != (top+bottom)/2 {
		t.Errorf("50 drawn at y=%v, want the middle %v", y, (top+bottom)/2)
	}
	if x0, x4 := num(pts[0][2]), num(pts[4][2]); x0 != chartLeft || x4 != chartW-chartRight {
		t.Errorf("x from %v to %v, want %d to %d", x0, x4, chartLeft, chartW-chartRight)
	}
	for _, want := range []string{">100<", ">0<", `aria-label="Requests"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("lacks %s", want)
		}
	}
	if strings.Contains(svg, "No data") {
		t.Error("a chart with data says it has none")
	}
}

// TestChartGaps: a null step breaks the line (a new M), a value alone
// between gaps is a dot, and a series with nothing says so.
func TestChartGaps(t *testing.T) {
	c := lineChart{Time: steps(1_700_000_000, 8, 10), Step: 10, Series: []chartSeries{{Label: "r", Values: []*float64{fp(1), nil, fp(2), fp(3), nil, nil, fp(4), fp(5)}}, {Label: "lonely", Values: []*float64{nil, nil, nil, fp(2), nil, nil, nil, nil}}}}
	svg := string(c.SVG())
	paths := pathRE.FindAllStringSubmatch(svg, -1)
	if len(paths) != 1 {
		t.Fatalf("%d lines, want 1 (the lonely value is a dot):\n%s", len(paths), svg)
	}
	d := paths[0][2]
	if got := strings.Count(d, "M"); got != 2 {
		t.Errorf("%d segments, want 2 (2 3 | 4 5): %s", got, d)
	}
	if got := len(pointRE.FindAllString(d, -1)); got != 4 {
		t.Errorf("%d points, want 4", got)
	}
	if got := len(circleRE.FindAllString(svg, -1)); got != 2 {
		t.Errorf("%d dots, want 2 (the first step and the lonely value)", got)
	}
	empty := lineChart{Time: steps(1_700_000_000, 4, 10), Step: 10, Series: []chartSeries{{Label: "r", Values: make([]*float64, 4)}}}
	if s := string(empty.SVG()); !strings.Contains(s, "No data in this window") || strings.Contains(s, "<path class=\"line") {
		t.Errorf("an empty chart:\n%s", s)
	}
	// A chart with no steps at all (a store that answered nothing) still renders.
	if s := string((lineChart{}).SVG()); !strings.Contains(s, "No data") {
		t.Errorf("a chart without steps:\n%s", s)
	}
}

// TestChartMarkers: events in the window are marked at their time with
// their message as tooltip (escaped); events outside are left out.
func TestChartMarkers(t *testing.T) {
	t0 := int64(1_700_000_000)
	c := lineChart{Time: steps(t0, 7, 10), Step: 10, Series: []chartSeries{{Label: "r", Values: []*float64{fp(1), fp(1), fp(1), fp(1), fp(1), fp(1), fp(1)}}},
		Events: []api.MetricEvent{
			{Time: t0 + 30, Kind: "deploy", Message: "release v2 <rolled> out"},
			{Time: t0 + 45, Kind: "Crash Loop", Message: "exit 1"},
			{Time: t0 - 100, Kind: "deploy", Message: "before the window"},
		}}
	svg := string(c.SVG())
	if n := strings.Count(svg, `<g class="event`); n != 2 {
		t.Fatalf("%d markers, want 2:\n%s", n, svg)
	}
	if !strings.Contains(svg, `<g class="event ev-deploy"><title>22:13:50 deploy: release v2 &lt;rolled&gt; out</title>`) {
		t.Errorf("deploy marker:\n%s", svg)
	}
	if !strings.Contains(svg, `class="event ev-crash-loop"`) {
		t.Errorf("kind not made a class:\n%s", svg)
	}
	// Half-way along the axis.
	mid := float64(chartLeft) + 0.5*float64(chartW-chartLeft-chartRight)
	if want := `x1="` + strconv.FormatFloat(mid, 'f', 1, 64) + `"`; !strings.Contains(svg, want) {
		t.Errorf("deploy marker not at %s", want)
	}
	if strings.Contains(svg, "before the window") {
		t.Error("an event outside the window is marked")
	}
}

// TestChartTimeTicks: round times, at most six, within the window.
func TestChartTimeTicks(t *testing.T) {
	for _, tc := range []struct {
		n     int
		step  int64
		every int64
	}{{360, 10, 600}, {360, 60, 3600}, {1440, 60, 4 * 3600}} {
		t0 := int64(1_700_000_123)
		c := lineChart{Time: steps(t0, tc.n, tc.step), Step: tc.step}
		ticks := c.timeTicks()
		if len(ticks) == 0 || len(ticks) > 6 {
			t.Fatalf("%d×%ds: %d ticks", tc.n, tc.step, len(ticks))
		}
		for _, tk := range ticks {
			if tk%tc.every != 0 || tk < t0 || tk > c.Time[len(c.Time)-1] {
				t.Errorf("%d×%ds: tick %d not a multiple of %d within the window", tc.n, tc.step, tk, tc.every)
			}
		}
	}
}

// TestMetricCharts: the card has the five charts with their headlines, one
// line per instance and the memory limit.
func TestMetricCharts(t *testing.T) {
	t0 := int64(1_700_000_000)
	mb := float64(1 << 20)
	m := api.AppMetrics{App: "web", Window: "1h", Step: 10, Time: steps(t0, 3, 10),
		RequestsPerSec: []*float64{fp(10), fp(12), nil}, Rate4xx: []*float64{fp(1), fp(0), nil}, Rate5xx: []*float64{fp(0), fp(0.5), nil},
		P50ms: []*float64{fp(3), fp(4), nil}, P99ms: []*float64{fp(30), fp(45), nil},
		Instances: []api.InstanceMetrics{
			{ID: "abcdef0123456", Node: "n1", Release: 3, MemoryBytes: []*float64{fp(20 * mb), fp(22 * mb), fp(21 * mb)}, MemoryLimit: 128 << 20, CPUPercent: []*float64{fp(5), fp(7), fp(6)}},
			{ID: "999999", Node: "n2", Release: 3, MemoryBytes: []*float64{nil, fp(30 * mb), fp(31 * mb)}, MemoryLimit: 128 << 20, CPUPercent: []*float64{nil, fp(2), fp(3)}},
		},
		Summary: api.MetricsSummary{RequestsPerSec: 12, P50ms: fp(4), P99ms: fp(45), ErrorRate: 0.02, MemoryBytes: 52 << 20, MemoryLimit: 256 << 20}}
	cs := metricCharts(m)
	got := map[string]chartView{}
	for _, c := range cs {
		got[c.ID] = c
	}
	for id, head := range map[string]string{"chart-requests": "12.0 req/s", "chart-latency": "p50 4.00 ms · p99 45.0 ms",
		"chart-errors": "2.00% 5xx", "chart-memory": "52.0 MB of 256 MB", "chart-cpu": "2 instances"} {
		if got[id].Headline != head {
			t.Errorf("%s headline %q, want %q", id, got[id].Headline, head)
		}
	}
	mem := got["chart-memory"]
	if len(mem.Legend) != 2 || mem.Legend[0].Label != "abcdef01 v3 on n1" {
		t.Errorf("memory legend %q", mem.Legend)
	}
	if !strings.Contains(string(mem.SVG), `<line class="limit"`) || !strings.Contains(string(mem.SVG), "limit 128 MB") {
		t.Errorf("memory chart lacks the 128 MB limit:\n%s", mem.SVG)
	}
	if n := len(pathRE.FindAllString(string(mem.SVG), -1)); n != 2 {
		t.Errorf("memory: %d lines, want one per instance", n)
	}
}

func TestSparkline(t *testing.T) {
	if s := string(sparkline(nil, "req/s")); strings.Contains(s, "<svg") {
		t.Errorf("no data drawn as %s", s)
	}
	s := string(sparkline([]float64{0, 5, 10, 5}, "req/s"))
	m := regexp.MustCompile(`points="([^"]*)"`).FindStringSubmatch(s)
	if m == nil || len(strings.Fields(m[1])) != 4 {
		t.Fatalf("sparkline %s", s)
	}
	pts := strings.Fields(m[1])
	if !strings.HasSuffix(pts[2], ","+strconv.Itoa(sparkPad)+".0") || !strings.HasSuffix(pts[0], ","+strconv.Itoa(sparkH-sparkPad)+".0") {
		t.Errorf("peak not at the top or zero not at the bottom: %v", pts)
	}
	if !strings.Contains(s, "<title>5.0 req/s now, peak 10.0</title>") {
		t.Errorf("tooltip: %s", s)
	}
}

// TestMarked: deploys, scales and restarts are marked and counted; health
// flips and the like are not.
func TestMarked(t *testing.T) {
	evs, counts := marked([]api.MetricEvent{{Kind: "create"}, {Kind: "deploy"}, {Kind: "health"}, {Kind: "restart"}, {Kind: "deploy"}})
	if len(evs) != 3 || len(counts) != 2 || counts[0] != (markCount{"deploy", 2}) || counts[1] != (markCount{"restart", 1}) {
		t.Errorf("marked %v, counts %v", evs, counts)
	}
}

// TestChartsRedisOutage: with Redis unreachable the app page and the app
// list still answer 200; the charts card says the metrics are unavailable
// and the sparkline is a dash. The card alone answers the same way.
func TestChartsRedisOutage(t *testing.T) {
	var proxy *testenv.Proxy
	e := newEnv(t, func(c *Config) {
		proxy = testenv.NewProxy(t, c.Base.RedisAddr)
		c.Base.RedisAddr = proxy.Addr()
	})
	e.createApp("web")
	b := newBrowser(t, e.url)
	b.login(e.admin.User, e.admin.Password)
	if resp, page := b.get("/apps/web"); resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="charts"`) ||
		strings.Contains(page, "Metrics are unavailable") {
		t.Fatalf("app page with Redis up: %d\n%s", resp.StatusCode, page)
	}
	proxy.Cut()
	resp, page := b.get("/apps/web?window=6h")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Metrics are unavailable right now") ||
		!strings.Contains(page, `<section class="card" id="instances-card"`) {
		t.Fatalf("app page with Redis down: %d\n%s", resp.StatusCode, page)
	}
	if resp, card := b.get("/apps/web/charts?window=24h"); resp.StatusCode != http.StatusOK || !strings.Contains(card, "Metrics are unavailable right now") ||
		!strings.Contains(card, `class="current" aria-current="true">24h<`) {
		t.Fatalf("charts card with Redis down: %d\n%s", resp.StatusCode, card)
	}
	if resp, list := b.get("/apps"); resp.StatusCode != http.StatusOK || !strings.Contains(list, `<td class="spark"><span class="muted">–</span></td>`) {
		t.Fatalf("app list with Redis down: %d\n%s", resp.StatusCode, list)
	}
}
