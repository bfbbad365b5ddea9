package hm

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// hmMetrics are hm's Prometheus series.
type hmMetrics struct {
	reg         *prometheus.Registry
	probesOK    prometheus.Counter
	probesFail  prometheus.Counter
	latency     prometheus.Histogram
	lag         prometheus.Histogram
	transitions *prometheus.CounterVec
	instances   prometheus.Gauge
	members     prometheus.Gauge
	unhealthy   *prometheus.GaugeVec
	redisErrors prometheus.Counter

	mu      sync.Mutex
	unhApps map[string]bool // apps with a series in unhealthy
}

func newHMMetrics() *hmMetrics {
	probes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_hm_probes_total", Help: "Health probes by result (rate() gives probes per second).",
	}, []string{"result"})
	m := &hmMetrics{
		reg:        prometheus.NewRegistry(),
		probesOK:   probes.WithLabelValues("ok"),
		probesFail: probes.WithLabelValues("fail"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dinp_hm_probe_duration_seconds",
			Help:    "Duration of one health probe, failures included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dinp_hm_probe_lag_seconds",
			Help:    "How late probes start after they are due; growing means hm cannot keep up (more workers or CPU, or another hm).",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_hm_transitions_total", Help: "Health status changes by new status.",
		}, []string{"status"}),
		instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_hm_instances", Help: "Instances probed by this hm (its shard).",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_hm_members", Help: "Live hm processes sharing the probes.",
		}),
		unhealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dinp_hm_unhealthy_instances", Help: "Unhealthy instances per app in this hm's shard.",
		}, []string{"app"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_hm_redis_errors_total", Help: "Failed Redis reads and writes.",
		}),
		unhApps: map[string]bool{},
	}
	m.members.Set(1)
	m.reg.MustRegister(probes, m.latency, m.lag, m.transitions, m.instances, m.members, m.unhealthy, m.redisErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *hmMetrics) observe(d time.Duration, err error) {
	m.latency.Observe(d.Seconds())
	if err == nil {
		m.probesOK.Inc()
	} else {
		m.probesFail.Inc()
	}
}

// setUnhealthy sets the gauge of every app in counts and drops the series
// of apps this hm no longer probes.
func (m *hmMetrics) setUnhealthy(counts map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for app, n := range counts {
		m.unhealthy.WithLabelValues(app).Set(float64(n))
		m.unhApps[app] = true
	}
	for app := range m.unhApps {
		if _, ok := counts[app]; !ok {
			m.unhealthy.DeleteLabelValues(app)
			delete(m.unhApps, app)
		}
	}
}
