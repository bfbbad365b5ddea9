package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/server/reconcile"
)

// metrics are the server's Prometheus series, served at /metrics on the
// API listener to requests bearing the cluster token. Label children are
// resolved once: a heartbeat costs one atomic add.
type metrics struct {
	reg         *prometheus.Registry
	leader      prometheus.Gauge
	rounds      prometheus.Counter
	roundTime   prometheus.Histogram
	nodes       [3]prometheus.Gauge // ready, draining, lost
	placed      prometheus.Counter
	stopped     prometheus.Counter
	beatOK      prometheus.Counter
	beatRefused prometheus.Counter // bad input or identity
	beatError   prometheus.Counter // Redis or MySQL unavailable
	redisErrors prometheus.Counter
}

func newMetrics() *metrics {
	nodes := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dinp_server_nodes", Help: "Nodes by state (ready, draining, lost) as the leader last saw them; 0 on followers.",
	}, []string{"state"})
	beats := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_server_heartbeats_total", Help: "Heartbeats received, by result (ok, refused, error).",
	}, []string{"result"})
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_server_leader", Help: "1 while this server is the leader, else 0.",
		}),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_server_reconcile_rounds_total", Help: "Reconcile rounds started by this server as leader.",
		}),
		roundTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dinp_server_reconcile_duration_seconds", Help: "Duration of one reconcile round, skipped rounds included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		placed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_server_instances_placed_total", Help: "Instances placed on nodes (rows created by applied plans).",
		}),
		stopped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_server_instances_stopped_total", Help: "Instances removed (rows deleted by applied plans).",
		}),
		beatOK:      beats.WithLabelValues("ok"),
		beatRefused: beats.WithLabelValues("refused"),
		beatError:   beats.WithLabelValues("error"),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_server_redis_write_errors_total", Help: "Failed writes of assignments, routes or heartbeats to Redis.",
		}),
	}
	for i, s := range []string{"ready", "draining", "lost"} {
		m.nodes[i] = nodes.WithLabelValues(s)
	}
	m.reg = httpapi.NewMetricsRegistry(m.leader, m.rounds, m.roundTime, nodes, m.placed, m.stopped, beats, m.redisErrors)
	return m
}

// setNodes sets the node gauges from the round's nodes.
func (m *metrics) setNodes(nodes []reconcile.Node, now time.Time, lostAfter time.Duration) {
	var n [3]int
	for _, nd := range nodes {
		switch {
		case now.Sub(nd.LastSeen) >= lostAfter:
			n[2]++
		case nd.Drain:
			n[1]++
		default:
			n[0]++
		}
	}
	for i, g := range m.nodes {
		g.Set(float64(n[i]))
	}
}
