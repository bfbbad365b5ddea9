package dash

import (
	"bytes"
	"context"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/dash/api"
	"github.com/dinp/dinp/dash/web"
)

// chartsTimeout bounds the metrics read of a page: a slow Redis costs the
// charts, never the page.
const chartsTimeout = 2 * time.Second

// chartWindows are the windows the app page offers, shortest first.
var chartWindows = []string{"1h", "6h", "24h"}

// chartsTemplate renders the charts card, both inside the app page and
// alone for the page's live refresh.
var chartsTemplate = template.Must(template.New("charts.html").ParseFS(web.Templates, "templates/charts.html"))

// chartView is one chart of the card.
type chartView struct {
	ID, Title, Headline string
	SVG                 template.HTML
	Legend              []legendItem
	Points              int // values drawn (not null), for the page's tests
}

// legendItem names one series with its colour class.
type legendItem struct{ Label, Class string }

// chartsData is what charts.html gets.
type chartsData struct {
	App, Window string
	Windows     []string
	// Empty explains why there is nothing to draw (no metrics store, an
	// error); the charts are then left out.
	Empty  string
	Charts []chartView
	Marks  []markCount // kinds of the events marked on the time axis
}

// markCount is one kind of marked event and how many the window has.
type markCount struct {
	Kind string
	N    int
}

// markedKinds are the events worth a mark on the time axis: what changes
// the traffic or the instances. Health flips, creation, domains and drains
// stay in the events list.
var markedKinds = map[string]bool{"deploy": true, "rollback": true, "scale": true, "env": true,
	"restart": true, "crash": true, "crash_loop": true, "oom": true, "lost": true}

// marked keeps the events to mark, and counts them by kind (in order of
// first appearance).
func marked(evs []api.MetricEvent) ([]api.MetricEvent, []markCount) {
	var out []api.MetricEvent
	var counts []markCount
	idx := map[string]int{}
	for _, e := range evs {
		if !markedKinds[e.Kind] {
			continue
		}
		out = append(out, e)
		i, ok := idx[e.Kind]
		if !ok {
			i = len(counts)
			idx[e.Kind] = i
			counts = append(counts, markCount{Kind: e.Kind})
		}
		counts[i].N++
	}
	return out, counts
}

// windowParam is the window a page asked for, 1h unless it is a known one.
func windowParam(c *gin.Context) string {
	w := c.Query("window")
	for _, ok := range chartWindows {
		if w == ok {
			return w
		}
	}
	return "1h"
}

// metricCharts turns an app's metrics into the page's charts.
func metricCharts(m api.AppMetrics) []chartView {
	base := lineChart{Time: m.Time, Step: int64(m.Step), Events: m.Events}
	with := func(unit string, series ...chartSeries) lineChart {
		c := base
		c.Unit, c.Series = unit, series
		return c
	}
	view := func(id, title, headline string, c lineChart) chartView {
		c.Title = title
		v := chartView{ID: id, Title: title, Headline: headline, SVG: c.SVG()}
		for i, s := range c.Series {
			v.Legend = append(v.Legend, legendItem{s.Label, s.class(i)})
			for _, x := range s.Values {
				if x != nil {
					v.Points++
				}
			}
		}
		return v
	}
	sm := m.Summary
	out := []chartView{
		view("chart-requests", "Requests", fmtFloat(sm.RequestsPerSec)+" req/s",
			with("req/s", chartSeries{Label: "requests/s", Values: m.RequestsPerSec})),
		view("chart-latency", "Latency", "p50 "+fmtMS(sm.P50ms)+" · p99 "+fmtMS(sm.P99ms),
			with("ms", chartSeries{Label: "p50 ms", Values: m.P50ms}, chartSeries{Label: "p99 ms", Values: m.P99ms})),
		view("chart-errors", "Errors", strconv.FormatFloat(100*sm.ErrorRate, 'f', 2, 64)+"% 5xx",
			with("req/s", chartSeries{"4xx/s", m.Rate4xx, "s3"}, chartSeries{"5xx/s", m.Rate5xx, "s1"})),
	}
	var mem, cpu []chartSeries
	var limit int64
	for _, in := range m.Instances {
		name := shortID(in.ID) + " v" + strconv.Itoa(in.Release) + " on " + in.Node
		mem = append(mem, chartSeries{Label: name, Values: scaled(in.MemoryBytes, 1.0/(1<<20))})
		cpu = append(cpu, chartSeries{Label: name, Values: in.CPUPercent})
		limit = max(limit, in.MemoryLimit)
	}
	mc := with("MB", mem...)
	if limit > 0 {
		l := float64(limit) / (1 << 20)
		mc.Limit = &l
	}
	memHead := bytesMB(sm.MemoryBytes)
	if sm.MemoryLimit > 0 {
		memHead += " of " + bytesMB(sm.MemoryLimit)
	}
	out = append(out, view("chart-memory", "Memory per instance", memHead, mc),
		view("chart-cpu", "CPU per instance", instancesLabel(len(m.Instances)), with("% of a core", cpu...)))
	return out
}

// hasSamples reports whether anything was reported in the window.
func hasSamples(m api.AppMetrics) bool {
	series := [][]*float64{m.RequestsPerSec, m.Rate4xx, m.Rate5xx, m.P50ms, m.P99ms}
	for _, in := range m.Instances {
		series = append(series, in.MemoryBytes, in.CPUPercent)
	}
	for _, s := range series {
		for _, v := range s {
			if v != nil {
				return true
			}
		}
	}
	return false
}

func instancesLabel(n int) string {
	if n == 1 {
		return "1 instance"
	}
	return strconv.Itoa(n) + " instances"
}

// scaled returns vals multiplied by f, keeping gaps.
func scaled(vals []*float64, f float64) []*float64 {
	out := make([]*float64, len(vals))
	for i, v := range vals {
		if v != nil {
			x := *v * f
			out[i] = &x
		}
	}
	return out
}

func shortID(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func fmtFloat(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fmtMS(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmtFloat(*v) + " ms"
}

func bytesMB(n int64) string { return fmtFloat(float64(n)/(1<<20)) + " MB" }

// appCharts renders the charts card of a over window. A failure to read
// metrics is shown in the card: the rest of the page still works.
func (h *webHandlers) appCharts(ctx context.Context, a appRow, window string) template.HTML {
	data := chartsData{App: a.Name, Window: window, Windows: chartWindows}
	ctx, cancel := context.WithTimeout(ctx, chartsTimeout)
	defer cancel()
	m, err := h.s.appMetrics(ctx, a, window)
	switch {
	case err != nil:
		h.log.Warn("read app metrics", "app", a.Name, "err", err)
		data.Empty = "Metrics are unavailable right now: " + apiError(err).Message
	case !hasSamples(m):
		data.Empty = "No requests and no instance samples in the last " + window + "."
	default:
		m.Events, data.Marks = marked(m.Events)
		data.Charts = metricCharts(m)
	}
	var b bytes.Buffer
	if err := chartsTemplate.Execute(&b, data); err != nil {
		h.log.Error("render charts", "app", a.Name, "err", err)
	}
	return template.HTML(b.String())
}

// webCharts serves the charts card alone (GET /apps/:app/charts?window=).
func (h *webHandlers) webCharts(c *gin.Context) {
	html := h.appCharts(c.Request.Context(), appOf(c), windowParam(c))
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusOK, "text/html; charset=utf-8", []byte(html))
}

// appSparklines renders each app's request rate over the last hour; an
// app without data, or a platform without metrics, gets a dash.
func (h *webHandlers) appSparklines(ctx context.Context, apps []string) map[string]template.HTML {
	out := make(map[string]template.HTML, len(apps))
	ctx, cancel := context.WithTimeout(ctx, chartsTimeout)
	defer cancel()
	series, err := h.s.requestSparklines(ctx, apps)
	if err != nil {
		h.log.Warn("read request sparklines", "err", err)
	}
	for _, a := range apps {
		out[a] = sparkline(series[a], "req/s")
	}
	return out
}
