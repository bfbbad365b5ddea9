// Package httpapi holds the gin helpers every dinp HTTP API shares: the
// JSON error answer, an engine with JSON 404/405 and panic recovery, and
// bearer-token checks. Importing it puts gin in release mode.
package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dinp/dinp/common"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// WriteError answers err as JSON. An *common.APIError keeps its status and code;
// anything else is a 500 "internal" whose detail is not shown to clients.
func WriteError(c *gin.Context, err error) {
	var ae *common.APIError
	if !errors.As(err, &ae) {
		ae = common.Errf(http.StatusInternalServerError, "internal", "internal error")
	}
	if ae.Status == http.StatusServiceUnavailable {
		// A dependency is down (MySQL, Redis): a client may retry shortly.
		c.Header("Retry-After", common.RetryAfterSeconds)
	}
	c.AbortWithStatusJSON(ae.Status, common.ErrorBody{Error: *ae})
}

// NewEngine returns a gin engine with panic recovery, JSON 404/405 answers and
// nothing else (no debug logging).
func NewEngine() *gin.Engine {
	r := gin.New()
	r.Use(gin.CustomRecovery(func(c *gin.Context, _ any) {
		WriteError(c, common.Errf(http.StatusInternalServerError, "internal", "internal error"))
	}))
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { WriteError(c, common.Errf(http.StatusNotFound, "not_found", "no such endpoint")) })
	r.NoMethod(func(c *gin.Context) {
		WriteError(c, common.Errf(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed"))
	})
	return r
}

// BearerToken returns the token of an "Authorization: Bearer X" header.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// RequireToken is middleware that admits only requests bearing token (the
// cluster token of platform components).
func RequireToken(token string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !common.TokenEqual(BearerToken(c.Request), token) {
			WriteError(c, common.ErrUnauthorized)
			return
		}
		c.Next()
	}
}

// NewMetricsRegistry returns a private Prometheus registry holding cs and
// the Go and process collectors, as every component's /metrics serves.
func NewMetricsRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(append(cs, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))...)
	return reg
}

// MetricsHandler serves reg's series to requests bearing the cluster token
// (Prometheus: authorization.credentials_file); any other request gets 401.
// Components whose listener carries authenticated APIs serve /metrics so.
func MetricsHandler(reg *prometheus.Registry, token string) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !common.TokenEqual(BearerToken(r), token) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(common.ErrorBody{Error: *common.ErrUnauthorized})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ClassNames are the status class label values of HTTP request counters,
// indexed by status/100 (0: anything else).
var ClassNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// StatusClass is the index in ClassNames of HTTP status code.
func StatusClass(code int) int {
	if c := code / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}
