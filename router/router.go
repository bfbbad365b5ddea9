// Package router is dinp's HTTP reverse proxy: it maps the Host of each
// request to an app's route (read from Redis, written by the server), picks a
// healthy instance, and proxies the request, retrying on another instance
// when a connection is refused.
package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/router/lb"
	"github.com/dinp/dinp/router/table"
)

// Error codes of responses the router makes itself, sent in the
// X-Dinp-Router-Error header so they are never mistaken for an app's answer.
const (
	HeaderRouterError = "X-Dinp-Router-Error"

	ErrUnknownRoute    = "unknown_route"
	ErrNoEndpoints     = "no_endpoints"
	ErrEndpointFailure = "endpoint_failure"
	ErrEmptyHost       = "empty_host"
	// ErrEndpointsFull: every instance is at MaxConnsPerBackend.
	ErrEndpointsFull = "endpoints_full"
)

// StickyCookie is the cookie naming the instance a sticky client is pinned to.
const StickyCookie = "__dinp_instance"

// lvsUserAgent is the User-Agent of keepalived's HTTP checks, answered on the
// main port so LVS can check the router where it sends traffic.
const lvsUserAgent = "HTTP-Monitor/1.1"

// maxAttempts bounds how many backends one request may try.
const maxAttempts = 3

// shutdownTimeout bounds waiting for in-flight requests after the drain.
const shutdownTimeout = 30 * time.Second

// Router serves apps by Host. Create it with New and start it with Run.
type Router struct {
	cfg     Config
	log     *slog.Logger
	keys    common.Keys
	rdb     *redis.Client
	table   *table.Table[*entry]
	metrics *metrics
	proxy   *httputil.ReverseProxy
	conns   *connPool  // the front's backend connections
	alog    *accessLog // nil without AccessLog
	certs   *certStore // nil without TLSAddr
	now     func() time.Time

	ln, statusLn, tlsLn net.Listener // tlsLn nil without TLSAddr
	// front and tlsFront serve the app listeners; srv and tlsSrv (net/http)
	// take over the connections they hand off (see front.go).
	front, tlsFront     *front
	srv, status, tlsSrv *http.Server

	ready    atomic.Bool  // first full load succeeded
	draining atomic.Bool  // Run's ctx is done
	version  atomic.Int64 // highest route version in the table

	hosts  chan string   // hosts announced on pub/sub, applied by syncLoop
	resync chan struct{} // buffered(1): coalesced full-resync requests
}

// entry is one host's route, immutable once in the table.
type entry struct {
	host  string
	raw   string // the JSON it was built from, to skip unchanged routes on resync
	route common.Route
	pool  *lb.Pool
	m     *appMetrics
}

// New validates cfg and opens the router's listeners; Redis is reached in Run.
func New(cfg Config) (*Router, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("router", cfg.LogLevel)
	}
	r := &Router{
		cfg:     cfg,
		log:     cfg.Log,
		keys:    cfg.Keys(),
		table:   table.New[*entry](),
		metrics: newMetrics(cfg.Metrics && cfg.AppMetrics),
		now:     time.Now,
		hosts:   make(chan string, 1024),
		resync:  make(chan struct{}, 1),
		conns:   newConnPool(cfg),
	}
	r.proxy = &httputil.ReverseProxy{
		Rewrite:        r.rewrite,
		Transport:      &retryTransport{r: r, base: newTransport(cfg)},
		ModifyResponse: r.modifyResponse,
		ErrorHandler:   r.proxyError,
		BufferPool:     proxyBufferPool{},
		ErrorLog:       slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	var err error
	if r.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	if r.statusLn, err = net.Listen("tcp", cfg.StatusAddr); err != nil {
		r.ln.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.StatusAddr, err)
	}
	errLog := slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug)
	if cfg.TLSAddr != "" {
		certs, err := loadCerts(cfg.TLSCerts)
		r.certs = certs
		if err != nil {
			r.ln.Close()
			r.statusLn.Close()
			return nil, err
		}
		if r.tlsLn, err = net.Listen("tcp", cfg.TLSAddr); err != nil {
			r.ln.Close()
			r.statusLn.Close()
			return nil, fmt.Errorf("listen %s: %w", cfg.TLSAddr, err)
		}
		// ALPN h2 and http/1.1: the front serves HTTP/1.1 connections and
		// hands h2 ones, right after the handshake, to tlsSrv, whose built-in
		// HTTP/2 server runs ServeHTTP per stream (net/http sets up h2 for
		// *tls.Conns a server without TLSConfig is given). WebSocket clients
		// ask for http/1.1.
		r.tlsFront = newFront(r, r.tlsLn, &tls.Config{GetCertificate: certs.get, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}})
		r.tlsSrv = &http.Server{Handler: r, ReadHeaderTimeout: frontHeader, IdleTimeout: frontIdle, ErrorLog: errLog,
			ConnContext: connContext, Protocols: tlsProtocols()}
	}
	r.rdb = newRedis(cfg.Base)
	r.front = newFront(r, r.ln, nil)
	r.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dinp_router_loop_connections", Help: "Client connections served by the event loops.",
	}, func() float64 {
		if ls := r.front.loops; ls != nil {
			return float64(ls.connections())
		}
		return 0
	}))
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: frontHeader, IdleTimeout: frontIdle, ErrorLog: errLog}
	r.status = &http.Server{Handler: r.statusHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	if cfg.AccessLog {
		out := cfg.AccessLogOutput
		if out == nil {
			out = os.Stderr
		}
		max := cfg.accessLogMax
		if max <= 0 {
			max = accessLogQueue
		}
		r.alog = newAccessLog(out, max, r.metrics.logDropped)
	}
	return r, nil
}

// Addr returns the bound address serving apps.
func (r *Router) Addr() string { return r.ln.Addr().String() }

// TLSAddr returns the bound TLS address, "" without TLS.
func (r *Router) TLSAddr() string {
	if r.tlsLn == nil {
		return ""
	}
	return r.tlsLn.Addr().String()
}

// StatusAddr returns the bound address of /health, /metrics and /routes.
func (r *Router) StatusAddr() string { return r.statusLn.Addr().String() }

// Healthy reports whether the router wants traffic: routes loaded, not draining.
func (r *Router) Healthy() bool { return r.ready.Load() && !r.draining.Load() }

// Run serves until ctx is done, then reports unhealthy for DrainPeriod,
// shuts the servers down gracefully and stops reading routes.
func (r *Router) Run(ctx context.Context) error {
	syncCtx, stopSync := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.syncLoop(syncCtx) })
	wg.Go(func() { r.subscribeLoop(syncCtx) })
	if r.certs != nil {
		wg.Go(func() { r.certLoop(syncCtx) })
	}
	wg.Go(func() {
		// The Cluster page shows each router's route version and its lag
		// behind routes:version.
		redisx.ReportStatus(syncCtx, r.rdb, r.keys, common.RoleRouter, redisx.MemberID(r.StatusAddr()), common.StatusPeriod, r.log,
			func(st *common.ComponentStatus) {
				v, n := r.version.Load(), r.table.Len()
				st.Addr, st.RoutesVersion, st.Routes = r.Addr(), &v, &n
			})
	})
	if r.cfg.Metrics && r.cfg.AppMetrics {
		wg.Go(func() { r.appMetricsLoop(syncCtx) })
	}
	wg.Go(func() {
		tick := time.NewTicker(r.conns.idleTimeout / 3)
		defer tick.Stop()
		for {
			select {
			case <-syncCtx.Done():
				return
			case now := <-tick.C:
				r.conns.sweep(now)
			}
		}
	})

	errc := make(chan error, 5)
	serve := func(s *http.Server, ln net.Listener) {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}
	r.front.startLoops()
	for _, f := range []*front{r.front, r.tlsFront} {
		if f == nil {
			continue
		}
		wg.Go(f.serve)
	}
	wg.Go(func() { serve(r.srv, r.front.handoff) })
	wg.Go(func() { serve(r.status, r.statusLn) })
	if r.tlsSrv != nil {
		wg.Go(func() { serve(r.tlsSrv, r.tlsFront.handoff) })
	}
	r.log.Info("router started", "addr", r.Addr(), "status_addr", r.StatusAddr())

	var runErr error
	select {
	case <-ctx.Done():
		r.draining.Store(true)
		r.log.Info("router draining", "drain_period", r.cfg.DrainPeriod)
		select {
		case <-time.After(r.cfg.DrainPeriod):
		case runErr = <-errc:
		}
	case runErr = <-errc:
		r.draining.Store(true)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Stop accepting, then wait for in-flight requests (all servers at once).
	var swg sync.WaitGroup
	for _, f := range []*front{r.front, r.tlsFront} {
		if f != nil {
			swg.Go(func() {
				if err := f.shutdown(sctx); err != nil {
					r.log.Warn("shutdown", "err", err)
				}
			})
		}
	}
	for _, s := range []*http.Server{r.srv, r.tlsSrv} {
		if s == nil {
			continue
		}
		swg.Go(func() {
			if err := s.Shutdown(sctx); err != nil {
				r.log.Warn("shutdown", "err", err)
				s.Close()
			}
		})
	}
	swg.Wait()
	if r.alog != nil {
		r.alog.Close() // every request has ended: write out their lines
	}
	r.status.Close()
	r.conns.close()
	stopSync()
	wg.Wait()
	r.rdb.Close()
	r.log.Info("router stopped")
	if runErr != nil {
		return fmt.Errorf("serve: %w", runErr)
	}
	return nil
}

// reqState travels with one proxied request through the context.
type reqState struct {
	e       *entry
	start   time.Time
	id      string
	backend *lb.Backend
	started bool      // the ReverseProxy path holds backend's in-flight count
	status  int       // the front's answer
	sticky  string    // instance named by the client's StickyCookie (sticky routes)
	aborted bool      // the backend broke mid-body: abort the client connection
	body    *idleBody // the request body under BodyIdleTimeout, or nil
}

type stateKey struct{}

// ServeHTTP routes one request of a connection the front handed over.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("User-Agent") == lvsUserAgent {
		r.writeHealth(w)
		return
	}
	if r.serveACMEChallenge(w, req) {
		return
	}
	if cs, ok := req.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok && req.TLS == nil {
		req.TLS = cs
	}
	st := &reqState{start: r.now()}
	given := req.Header.Get("X-Request-Id")
	var idBuf [32]byte
	if st.id = requestID(given, &idBuf); given == "" {
		req.Header.Set("X-Request-Id", st.id)
	}
	rec := &recorder{ResponseWriter: w}
	e, rej := r.routeHostString(req.Host)
	st.e = e
	if rej.status != 0 {
		r.writeReject(rec, rej)
	} else {
		if e.route.Sticky {
			if c, err := req.Cookie(StickyCookie); err == nil {
				st.sticky = c.Value
			}
		}
		st.body = r.watchBody(w, req)
		r.serveProxy(rec, req.WithContext(context.WithValue(req.Context(), stateKey{}, st)), st)
		if st.backend != nil && st.started {
			st.backend.Done()
		}
	}
	bp := lineBufs.Get().(*[]byte)
	*bp = finishRequest(r, st, r.now(), rec.code(), rec.bytes, req.Host, req.Method, req.URL.Path, st.id, *bp)
	lineBufs.Put(bp)
	if st.aborted {
		// Like httputil.ReverseProxy: a truncated body must not look complete.
		panic(http.ErrAbortHandler)
	}
}

// serveProxy runs the ReverseProxy. When the backend breaks mid-body,
// ReverseProxy aborts the handler (panics with http.ErrAbortHandler): that
// is noted in st.aborted, so ServeHTTP still ends the backend's in-flight
// count and counts and logs the request before it aborts the connection.
func (r *Router) serveProxy(w http.ResponseWriter, req *http.Request, st *reqState) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			st.aborted = true
		}
	}()
	r.proxy.ServeHTTP(w, req)
}

// modifyResponse is the ReverseProxy path's hook for sticky sessions.
func (r *Router) modifyResponse(resp *http.Response) error {
	if st, ok := resp.Request.Context().Value(stateKey{}).(*reqState); ok && st.e.route.Sticky {
		tls := resp.Request != nil && resp.Request.TLS != nil
		if c := r.stickyCookie(st, r.setsSessionCookie(resp.Header["Set-Cookie"]), tls); c != "" {
			resp.Header.Add("Set-Cookie", c)
		}
	}
	return nil
}

// stickyCookie pins a client of a sticky route to the instance that
// answered: when the app's response sets one of its session cookies
// (setsSession), or when the client's pinned instance is gone and another
// one answered, it returns the StickyCookie naming the instance to add to
// the response, "" otherwise.
func (r *Router) stickyCookie(st *reqState, setsSession, tls bool) string {
	if !st.e.route.Sticky || st.backend == nil || st.backend.Instance == "" {
		return ""
	}
	if st.sticky == st.backend.Instance || (st.sticky == "" && !setsSession) {
		return ""
	}
	c := http.Cookie{Name: StickyCookie, Value: st.backend.Instance, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: tls}
	return c.String()
}

// setsSessionCookie reports whether Set-Cookie values set one of the
// configured session cookies.
func (r *Router) setsSessionCookie(setCookies []string) bool {
	for _, sc := range setCookies {
		name, _, _ := strings.Cut(sc, "=")
		name = strings.TrimSpace(name)
		for _, want := range r.cfg.StickyCookies {
			if name == want {
				return true
			}
		}
	}
	return false
}

// lineBufs are the ReverseProxy path's access log scratch buffers.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// rewrite builds the outbound request. The backend is chosen later, in the
// transport, so that a refused connection can be retried on another one.
func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(stateKey{}).(*reqState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "backend.invalid" // replaced per attempt
	pr.Out.Host = pr.In.Host
	c := r.newClientInfo(pr.In.RemoteAddr, pr.In.TLS != nil)
	in, out := pr.In.Header, pr.Out.Header
	prior := in["X-Forwarded-For"]
	proto := in.Get("X-Forwarded-Proto")
	fw := planForwarding(&c, len(prior) > 0, proto != "", in.Get("X-Request-Start") != "")
	if fw.realIP != "" {
		out.Set("X-Real-IP", fw.realIP)
	}
	if fw.keepXFF {
		out.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+fw.client)
	} else {
		out.Set("X-Forwarded-For", fw.client)
	}
	out.Set("X-Forwarded-Host", pr.In.Host)
	if fw.proto != "" {
		proto = fw.proto
	}
	out.Set("X-Forwarded-Proto", proto)
	if !fw.keepStart {
		out.Set("X-Request-Start", strconv.FormatInt(st.start.UnixMilli(), 10))
	}
	pr.Out.Header.Set("X-Request-Id", st.id)
}

// proxyError answers a request no backend could serve.
func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	st, _ := req.Context().Value(stateKey{}).(*reqState)
	r.backendError(w, req, st, err)
}

// backendError answers a request no backend could serve (both proxy paths).
func (r *Router) backendError(w http.ResponseWriter, req *http.Request, st *reqState, err error) {
	attrs := []any{"host", req.Host, "err", err}
	if st != nil {
		attrs = append(attrs, "app", st.e.route.App, "request_id", st.id)
	}
	switch {
	case st != nil && st.body != nil && st.body.timedOut.Load():
		w.Header().Set("Connection", "close")
		r.writeReject(w, rejection{http.StatusRequestTimeout, ErrBodyTimeout, "the request body stalled"})
		return
	case errors.Is(err, errAllFull):
		r.writeReject(w, rejectEndpointsFull(st.e.route.App))
		return
	case req.Context().Err() != nil:
		r.log.Debug("client gone", attrs...)
	default:
		r.log.Warn("backend failure", attrs...)
	}
	r.writeReject(w, rejectEndpointFailure)
}

// recorder captures status and size for logs and metrics. Unwrap lets
// http.ResponseController (used by ReverseProxy for flushing and protocol
// upgrades) reach the real writer.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends buffered data to the client (streams, server-sent events).
func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// tlsProtocols are what tlsSrv speaks: HTTP/1.1 on connections the front
// hands over mid-stream, HTTP/2 on TLS connections that negotiated h2.
func tlsProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return p
}

// newRedis is Base.NewRedis without go-redis's own retries: the sync loops
// already retry on their own schedule, and a read that fails fast lets the
// router go on serving its last table without stalling updates.
func newRedis(b config.Base) *redis.Client {
	opts := redisx.Options(b)
	opts.MaxRetries = -1
	return redisx.NewClient(b, opts)
}
