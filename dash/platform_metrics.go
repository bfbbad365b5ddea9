package dash

import (
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common/httpapi"
)

// Route groups of dash's request series: a route's group is fixed when the
// routes are registered, so a request costs a map read and atomic adds.
const (
	groupOther = iota // health, openapi, /metrics, unknown paths
	groupWeb
	groupAuth
	groupTeams
	groupApps
	groupLogs
	groupBuilds
	groupNodes
	numGroups
)

var groupNames = [numGroups]string{"other", "web", "auth", "teams", "apps", "logs", "builds", "nodes"}

// routeGroup is the group of a registered route path.
func routeGroup(path string) int {
	rest, api := strings.CutPrefix(path, "/api/v1/")
	switch {
	case !api:
		return groupWeb
	case strings.HasSuffix(path, "/logs") || strings.HasSuffix(path, "/log"):
		return groupLogs
	}
	seg, _, _ := strings.Cut(rest, "/")
	switch seg {
	case "login", "logout", "user", "users", "tokens":
		return groupAuth
	case "teams", "invitations":
		return groupTeams
	case "apps":
		return groupApps
	case "builds", "tasks":
		return groupBuilds
	case "nodes", "cluster":
		return groupNodes
	}
	return groupOther
}

// platformMetrics are dash's Prometheus series (metrics.go is the apps'
// metrics API), served at /metrics to requests bearing the cluster token.
type platformMetrics struct {
	reg       *prometheus.Registry
	requests  [numGroups][6]prometheus.Counter // [group][status class]
	durations [numGroups]prometheus.Observer
	loginFail prometheus.Counter
	groups    map[string]int // route path → group; written before serving
}

func newPlatformMetrics(follows func() int) *platformMetrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_dash_requests_total", Help: "Requests by route group (web, auth, teams, apps, logs, builds, nodes, other) and status class.",
	}, []string{"group", "class"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dinp_dash_request_duration_seconds", Help: "Time to answer requests, by route group (log follows last as long as they are open).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"group"})
	m := &platformMetrics{
		loginFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_dash_login_failures_total", Help: "Password checks failed for a wrong user or password (API and web logins, password changes); attempts refused by the rate limit are not counted.",
		}),
		groups: map[string]int{},
	}
	for g, name := range groupNames {
		m.durations[g] = durations.WithLabelValues(name)
		for c, class := range httpapi.ClassNames {
			m.requests[g][c] = requests.WithLabelValues(name, class)
		}
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dinp_dash_log_follows", Help: "Log follows open (live app, build and task logs).",
	}, func() float64 { return float64(follows()) })
	m.reg = httpapi.NewMetricsRegistry(requests, durations, m.loginFail, active)
	return m
}

// observe is middleware counting every request by its route's group.
func (m *platformMetrics) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	g := m.groups[c.FullPath()] // "" (no route): other
	m.requests[g][httpapi.StatusClass(c.Writer.Status())].Inc()
	m.durations[g].Observe(time.Since(start).Seconds())
}

// follows is the number of open log follows.
func (h *logHub) follows() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, k := range h.users {
		n += k
	}
	return n
}
