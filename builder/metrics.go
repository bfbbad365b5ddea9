package builder

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common/httpapi"
)

// metrics are the builder's Prometheus series, served at /metrics on the
// API listener to requests bearing the cluster token.
type metrics struct {
	reg        *prometheus.Registry
	builds     *prometheus.CounterVec
	duration   prometheus.Histogram
	pushFailed prometheus.Counter
}

func newMetrics(s *slots) *metrics {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_builder_builds_total", Help: "Finished builds by result (succeeded, failed) and detected stack (none: failed before detection).",
		}, []string{"result", "stack"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dinp_builder_build_duration_seconds", Help: "Duration of finished builds, upload to push, queueing included.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		pushFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_builder_push_failures_total", Help: "Image pushes to the registry that failed.",
		}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dinp_builder_queue_length", Help: "Builds waiting for a build slot.",
	}, func() float64 { return float64(s.queued()) })
	m.reg = httpapi.NewMetricsRegistry(m.builds, m.duration, m.pushFailed, queue)
	return m
}

// finished counts a build that ended with status after d.
func (m *metrics) finished(status, stack string, d time.Duration) {
	if stack == "" {
		stack = "none"
	}
	m.builds.WithLabelValues(status, stack).Inc()
	m.duration.Observe(d.Seconds())
}
