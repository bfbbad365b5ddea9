package router

import (
	"net/http"
	"sort"

	"github.com/dinp/dinp/common/httpapi"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// statusHandler serves the status port: /health for keepalived, /metrics for
// Prometheus and /routes to see what this router serves.
func (r *Router) statusHandler() http.Handler {
	g := httpapi.NewEngine()
	g.GET("/health", func(c *gin.Context) { r.writeHealth(c.Writer) })
	g.GET("/metrics", gin.WrapH(promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{})))
	// What every app is and where it runs is for the platform only.
	g.GET("/routes", httpapi.RequireToken(r.cfg.ClusterToken), r.routesDump)
	return g
}

// writeHealth answers 200 when the router wants traffic, 503 before the first
// route load and while draining.
func (r *Router) writeHealth(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case r.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("draining\n"))
	case !r.ready.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("routes not loaded\n"))
	default:
		w.Write([]byte("ok\n"))
	}
}

// RouteInfo is one host in the /routes dump.
type RouteInfo struct {
	Host     string   `json:"host"`
	App      string   `json:"app"`
	Release  int      `json:"release"`
	Version  int64    `json:"version"`
	Backends []string `json:"backends"`
	Healthy  int      `json:"healthy"`
}

// RoutesDump is the JSON of GET /routes (?host=X limits it to one host).
type RoutesDump struct {
	Ready   bool        `json:"ready"`
	Version int64       `json:"version"`
	Size    int         `json:"size"`
	Routes  []RouteInfo `json:"routes"`
}

func (r *Router) routesDump(c *gin.Context) {
	snap := r.table.Snapshot()
	out := RoutesDump{Ready: r.ready.Load(), Version: r.version.Load(), Size: len(snap), Routes: []RouteInfo{}}
	only := c.Query("host")
	for host, e := range snap {
		if only != "" && host != only {
			continue
		}
		ri := RouteInfo{Host: host, App: e.route.App, Release: e.route.Release, Version: e.route.Version, Backends: []string{}}
		for _, b := range e.pool.Backends() {
			ri.Backends = append(ri.Backends, b.Addr)
			if b.Healthy {
				ri.Healthy++
			}
		}
		out.Routes = append(out.Routes, ri)
	}
	sort.Slice(out.Routes, func(i, j int) bool { return out.Routes[i].Host < out.Routes[j].Host })
	c.JSON(http.StatusOK, out)
}
