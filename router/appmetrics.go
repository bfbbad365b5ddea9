package router

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dinp/dinp/common/appmetrics"
)

// App metrics: the per-app Prometheus series (metrics.go) already count
// every request with a few atomic additions and no lock; every 10 s one
// goroutine reads their totals, subtracts what it wrote last time and adds
// the difference to the app's rings in Redis (common/appmetrics), where the
// other routers add theirs. A request never waits for Redis: when a write
// fails its counts are dropped and counted in
// dinp_router_app_metrics_dropped_total.

// appFlushDelay is how long after a step's end its counts are written, so
// requests finishing on the boundary are in.
const appFlushDelay = 100 * time.Millisecond

// appFlushTimeout bounds one write to Redis.
const appFlushTimeout = 5 * time.Second

// appFlusher turns the series' totals into per-step differences. It is
// owned by the flush goroutine.
type appFlusher struct {
	r     *Router
	store *appmetrics.Store
	last  map[*appMetrics]appmetrics.Traffic // totals already written
}

// appMetricsLoop flushes at every step boundary until ctx is done, then
// flushes what the last step counted.
func (r *Router) appMetricsLoop(ctx context.Context) {
	f := &appFlusher{r: r, store: appmetrics.NewStore(r.rdb, r.keys), last: map[*appMetrics]appmetrics.Traffic{}}
	const step = appmetrics.FineStep * time.Second
	for {
		now := r.now()
		t := time.NewTimer(now.Truncate(step).Add(step + appFlushDelay).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.Background(), appFlushTimeout)
			f.flush(fctx, r.now())
			cancel()
			return
		case <-t.C:
			// The counts are the step that just ended.
			f.flush(ctx, r.now().Add(-2*appFlushDelay))
		}
	}
}

// flush writes what every app counted since the last flush into at's step.
func (f *appFlusher) flush(ctx context.Context, at time.Time) {
	m := f.r.metrics
	m.mu.Lock()
	apps := make([]*appMetrics, 0, len(m.apps))
	for _, a := range m.apps {
		apps = append(apps, a)
	}
	m.mu.Unlock()
	batch := map[string]*appmetrics.Traffic{}
	var requests uint64
	for _, a := range apps {
		cur, ok := a.totals()
		if !ok {
			continue
		}
		d := cur
		d.Sub(f.last[a])
		f.last[a] = cur
		if !d.IsZero() {
			batch[a.name] = &d
			requests += d.Requests()
		}
	}
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, appFlushTimeout)
	defer cancel()
	if err := f.store.Flush(ctx, at, batch, nil); err != nil {
		m.appFlushes.WithLabelValues("error").Inc()
		m.appDropped.Add(float64(requests))
		f.r.log.Warn("app metrics not written", "apps", len(batch), "requests", requests, "err", err)
		return
	}
	m.appFlushes.WithLabelValues("ok").Inc()
}

// totals reads the app's series since the router started; false when it
// has answered no request yet (its series do not exist).
func (a *appMetrics) totals() (appmetrics.Traffic, bool) {
	var t appmetrics.Traffic
	any := false
	for c := range a.byClass {
		if cc := a.byClass[c].Load(); cc != nil {
			t.Classes[c] = uint64(counterValue(cc.Counter))
			any = true
		}
	}
	if !any {
		return t, false
	}
	s := a.series() // exists: observe made it before any class counter
	var pm dto.Metric
	if h, ok := s.latency.(prometheus.Metric); ok && h.Write(&pm) == nil && pm.Histogram != nil {
		var below uint64
		for i, b := range pm.Histogram.GetBucket() {
			if i >= len(appmetrics.Buckets) {
				break
			}
			t.Hist[i] = b.GetCumulativeCount() - below
			below = b.GetCumulativeCount()
		}
		t.Hist[len(appmetrics.Buckets)] = pm.Histogram.GetSampleCount() - below
	}
	if s.bytes != nil {
		t.Bytes = int64(counterValue(s.bytes))
	}
	return t, true
}

func counterValue(c prometheus.Counter) float64 {
	var pm dto.Metric
	if c.Write(&pm) != nil || pm.Counter == nil {
		return 0
	}
	return pm.Counter.GetValue()
}
