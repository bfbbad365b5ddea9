package dash

import (
	"math"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/dash/api"
)

// metricWindows are the windows GET .../metrics serves: the resolution and
// the number of steps of each.
var metricWindows = map[string]struct{ step, steps int }{
	"1h":  {appmetrics.FineStep, appmetrics.FineSlots},
	"6h":  {appmetrics.CoarseStep, 6 * 60},
	"24h": {appmetrics.CoarseStep, appmetrics.CoarseSlots},
}

// errMetricsUnavailable answers a metrics read while Redis cannot be read:
// the apps serve on, only their figures are missing.
var errMetricsUnavailable = common.Errf(http.StatusServiceUnavailable, "unavailable", "app metrics cannot be read right now (Redis unreachable); try again")

// maxMetricEvents bounds the events marked on a window's time axis.
const maxMetricEvents = 200

// metricsOf turns a window read from the store into the API's series.
func metricsOf(w appmetrics.Window) api.AppMetrics {
	n := len(w.Time)
	step := float64(w.Step)
	m := api.AppMetrics{
		Step: w.Step, Time: w.Time,
		RequestsPerSec: make([]*float64, n), Rate4xx: make([]*float64, n), Rate5xx: make([]*float64, n),
		P50ms: make([]*float64, n), P95ms: make([]*float64, n), P99ms: make([]*float64, n),
		BytesPerSec: make([]*float64, n),
		Instances:   []api.InstanceMetrics{},
	}
	// One backing array for every value of the answer: thousands of
	// small allocations otherwise.
	vals := make([]float64, 0, 7*n+2*n*len(w.Instances))
	fptr := func(v float64) *float64 {
		vals = append(vals, v)
		return &vals[len(vals)-1]
	}
	pct := func(h *[appmetrics.NumBuckets]uint64, q float64) *float64 {
		if v, ok := appmetrics.Percentile(h, q); ok {
			return fptr(round(v, 1e3)) // µs
		}
		return nil
	}
	var total, errors5xx uint64
	latest := -1
	for i, t := range w.Traffic {
		if t == nil {
			continue
		}
		req := t.Requests()
		total += req
		errors5xx += t.Classes[5]
		m.RequestsPerSec[i] = fptr(round(float64(req)/step, 1e4))
		m.Rate4xx[i] = fptr(round(float64(t.Classes[4])/step, 1e4))
		m.Rate5xx[i] = fptr(round(float64(t.Classes[5])/step, 1e4))
		m.BytesPerSec[i] = fptr(round(float64(t.Bytes)/step, 10))
		m.P50ms[i] = pct(&t.Hist, .50)
		m.P95ms[i] = pct(&t.Hist, .95)
		m.P99ms[i] = pct(&t.Hist, .99)
		latest = i
	}
	// The last step may still be on its way from the routers: the headline
	// is the latest of the last two steps that has data.
	if latest >= n-2 && latest >= 0 {
		m.Summary.RequestsPerSec = *m.RequestsPerSec[latest]
		m.Summary.P50ms, m.Summary.P99ms = m.P50ms[latest], m.P99ms[latest]
	}
	m.Summary.Requests = int64(total)
	if total > 0 {
		m.Summary.ErrorRate = float64(errors5xx) / float64(total)
	}
	for _, is := range w.Instances {
		im := api.InstanceMetrics{
			ID: is.ID, Node: is.Node, Release: is.Release, MemoryLimit: is.MemoryLimit,
			CPUPercent: make([]*float64, n), MemoryBytes: make([]*float64, n),
		}
		lo, hi, last := -1, -1, -1
		for i, s := range is.Steps {
			if s == nil {
				continue
			}
			im.CPUPercent[i] = fptr(round(s.CPUPercent, 100))
			im.MemoryBytes[i] = fptr(float64(s.Memory))
			if lo < 0 || s.Restarts < lo {
				lo = s.Restarts
			}
			hi = max(hi, s.Restarts)
			last = i
		}
		if last < 0 {
			continue // reported in the window's current step only
		}
		im.Restarts = hi - lo
		if last >= n-3 { // still running: counts in the headline
			m.Summary.MemoryBytes += is.Steps[last].Memory
			m.Summary.MemoryLimit += is.MemoryLimit
		}
		m.Instances = append(m.Instances, im)
	}
	return m
}

// round rounds v to 1/scale: the answer carries what a chart or a reader
// can use, not 17 digits (a third of its size and of its encoding time).
func round(v, scale float64) float64 { return math.Round(v*scale) / scale }
