package agent

import (
	"net/http"

	"github.com/dinp/dinp/common/httpapi"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus series, on a private registry so
// several agents can live in one process (dinp up, tests).
type metrics struct {
	reg        *prometheus.Registry
	heartbeats *prometheus.CounterVec
	failures   *prometheus.CounterVec
	restarts   prometheus.Counter
	containers prometheus.Gauge
	samples    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_agent_heartbeats_total", Help: "Heartbeats by result (ok, unknown, error).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_agent_operation_failures_total", Help: "Failed Docker operations by kind.",
		}, []string{"op"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_agent_restarts_total", Help: "Containers recreated after they exited.",
		}),
		containers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_agent_containers", Help: "dinp containers on this node at the last observation.",
		}),
		samples: sampleCounter(),
	}
	m.reg.MustRegister(m.heartbeats, m.failures, m.restarts, m.containers, m.samples)
	return m
}

// handler serves GET /health (200 with the agent's Status) and GET /metrics.
func (a *Agent) handler() http.Handler {
	r := httpapi.NewEngine()
	r.GET("/health", func(c *gin.Context) { c.JSON(http.StatusOK, a.Status()) })
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})))
	return r
}
