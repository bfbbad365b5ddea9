package router

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus series. Per-app counters are resolved
// once per app and cached in the route entry, so a request does no label
// lookup.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	routes    prometheus.Gauge
	version   prometheus.Gauge
	syncFails prometheus.Counter

	mu   sync.Mutex
	apps map[string]*appMetrics // guarded by mu
}

// appMetrics holds one app's resolved counters.
type appMetrics struct {
	byClass  [6]prometheus.Counter // index status/100; 0 = other
	failures prometheus.Counter
	retries  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_router_requests_total", Help: "Proxied requests by app and status class.",
		}, []string{"app", "class"}),
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
		apps: map[string]*appMetrics{},
	}
	m.reg.MustRegister(m.requests, m.failures, m.retries, m.rejected, m.routes, m.version, m.syncFails,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) app(name string) *appMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.apps[name]; a != nil {
		return a
	}
	a := &appMetrics{
		failures: m.failures.WithLabelValues(name),
		retries:  m.retries.WithLabelValues(name),
	}
	for i, class := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		a.byClass[i] = m.requests.WithLabelValues(name, class)
	}
	m.apps[name] = a
	return a
}

func (a *appMetrics) observe(status int) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	a.byClass[c].Inc()
}
