package router

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dinp/dinp/common/appmetrics"
)

// metrics are the router's Prometheus series. Per-app counters are resolved
// once per app and cached in the route entry, so a request does no label
// lookup.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	routes    prometheus.Gauge
	version   prometheus.Gauge
	syncFails prometheus.Counter
	// logDropped counts access log lines dropped because the queue was full.
	logDropped prometheus.Counter
	// bytes, appFlushes and appDropped exist with app metrics (see
	// appmetrics.go); bytes is nil without them.
	bytes      *prometheus.CounterVec
	appFlushes *prometheus.CounterVec
	appDropped prometheus.Counter
	// acmeCerts is the number of ACME certificates served by SNI.
	acmeCerts prometheus.Gauge

	mu   sync.Mutex
	apps map[string]*appMetrics // guarded by mu
}

// appMetrics holds one app's series. They are created on the app's first
// request, not with its route: a router with 10,000 routes mostly idle would
// otherwise spend ~5 KB per app on series nobody reads. After creation a
// request costs a few atomic operations, no label lookup.
type appMetrics struct {
	m       *metrics
	name    string
	once    sync.Once
	s       *appSeries                      // set by once
	byClass [6]atomic.Pointer[classCounter] // index status/100; 0 = other
}

type appSeries struct {
	latency  prometheus.Observer
	failures prometheus.Counter
	retries  prometheus.Counter
	bytes    prometheus.Counter // nil without app metrics
}

type classCounter struct{ prometheus.Counter }

var classNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (a *appMetrics) series() *appSeries {
	a.once.Do(func() {
		a.s = &appSeries{
			latency:  a.m.latency.WithLabelValues(a.name),
			failures: a.m.failures.WithLabelValues(a.name),
			retries:  a.m.retries.WithLabelValues(a.name),
		}
		if a.m.bytes != nil {
			a.s.bytes = a.m.bytes.WithLabelValues(a.name)
		}
	})
	return a.s
}

// newMetrics returns the router's series; withApp adds what app metrics
// need (response bytes per app, flush outcomes).
func newMetrics(withApp bool) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_requests_total", Help: "Proxied requests by app and status class.",
		}, []string{"app", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dinp_router_request_duration_seconds", Help: "Time to answer proxied requests, by app.",
			Buckets: appmetrics.Buckets, // the app metrics' histogram is this one
		}, []string{"app"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_backend_failures_total", Help: "Failed attempts to reach a backend.",
		}, []string{"app"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_retries_total", Help: "Requests retried on another backend.",
		}, []string{"app"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_rejected_total", Help: "Requests answered by the router itself, by error code.",
		}, []string{"code"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_router_routes", Help: "Hosts in the route table.",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_router_routes_version", Help: "Highest route version in the table.",
		}),
		syncFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_router_route_sync_errors_total", Help: "Failed route reads from Redis.",
		}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_router_access_log_dropped_total", Help: "Access log lines dropped because the log queue was full.",
		}),
		acmeCerts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_router_acme_certificates", Help: "Certificates of custom domains (ACME) served by SNI.",
		}),
		apps: map[string]*appMetrics{},
	}
	m.reg.MustRegister(m.requests, m.latency, m.failures, m.retries, m.rejected, m.routes, m.version, m.syncFails, m.logDropped, m.acmeCerts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if withApp {
		m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_response_bytes_total", Help: "Response bytes sent to clients, by app.",
		}, []string{"app"})
		m.appFlushes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_app_metrics_flushes_total", Help: "Writes of app metrics to Redis, by result (ok, error).",
		}, []string{"result"})
		m.appDropped = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_router_app_metrics_dropped_total", Help: "Requests whose app metrics were lost because Redis could not be written.",
		})
		m.reg.MustRegister(m.bytes, m.appFlushes, m.appDropped)
	}
	return m
}

// app returns the (lazily filled) series holder of app name.
func (m *metrics) app(name string) *appMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.apps[name]; a != nil {
		return a
	}
	a := &appMetrics{m: m, name: name}
	m.apps[name] = a
	return a
}

// observe counts one answered request of n response bytes (nil a:
// metrics off).
func (a *appMetrics) observe(status int, d time.Duration, n int64) {
	if a == nil {
		return
	}
	s := a.series()
	s.latency.Observe(d.Seconds())
	if s.bytes != nil && n > 0 {
		s.bytes.Add(float64(n))
	}
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	cc := a.byClass[c].Load()
	if cc == nil {
		// Racing creators get the same series from the vec.
		cc = &classCounter{a.m.requests.WithLabelValues(a.name, classNames[c])}
		a.byClass[c].Store(cc)
	}
	cc.Inc()
}

// failure counts a failed attempt (nil a: metrics off).
func (a *appMetrics) failure() {
	if a != nil {
		a.series().failures.Inc()
	}
}

// retry counts a retried attempt (nil a: metrics off).
func (a *appMetrics) retry() {
	if a != nil {
		a.series().retries.Inc()
	}
}
