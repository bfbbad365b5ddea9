package registry

import (
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common/httpapi"
)

// metrics are the registry's Prometheus series, served at /metrics on its
// listener to requests bearing the cluster token (not served by an
// anonymous registry). Request counters are resolved once per method and
// status class: a request costs one atomic add.
type metrics struct {
	reg      *prometheus.Registry
	requests [len(methods) + 1][6]prometheus.Counter // [method index][status class]
	gcOK     prometheus.Counter
	gcFailed prometheus.Counter
	deleted  prometheus.Counter
	refused  prometheus.Counter
}

// methods are the request methods with their own label; others count as
// "other".
var methods = [...]string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete}

func newMetrics() *metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_registry_requests_total", Help: "Requests by method and status class, token endpoint included.",
	}, []string{"method", "class"})
	gc := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_registry_gc_runs_total", Help: "Garbage collections by result (ok, error).",
	}, []string{"result"})
	m := &metrics{
		gcOK:     gc.WithLabelValues("ok"),
		gcFailed: gc.WithLabelValues("error"),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_registry_gc_deleted_manifests_total", Help: "App manifests deleted by garbage collection.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_registry_token_refused_total", Help: "Token requests refused for missing or invalid credentials.",
		}),
	}
	for i := range m.requests {
		method := "other"
		if i < len(methods) {
			method = methods[i]
		}
		for c, class := range httpapi.ClassNames {
			m.requests[i][c] = requests.WithLabelValues(method, class)
		}
	}
	m.reg = httpapi.NewMetricsRegistry(requests, gc, m.deleted, m.refused)
	return m
}

// gc counts one garbage collection.
func (m *metrics) gc(st GCStats, err error) {
	m.deleted.Add(float64(st.ManifestsDeleted))
	if err != nil {
		m.gcFailed.Inc()
	} else {
		m.gcOK.Inc()
	}
}

// count wraps h, counting its answers by method and status class.
func (m *metrics) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := len(methods)
		for j, meth := range methods {
			if r.Method == meth {
				i = j
				break
			}
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		m.requests[i][httpapi.StatusClass(sw.status)].Inc()
	})
}

// statusWriter records the status written; it passes Flush and ReadFrom
// (sendfile for blobs) through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
