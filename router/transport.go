package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dinp/dinp/router/lb"
)

// newTransport returns the connection pool shared by every route: many idle
// keep-alive connections per backend, since a router talks to few hosts a lot.
func newTransport(cfg Config) *http.Transport {
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	local := &net.Dialer{Timeout: cfg.LocalDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if ctx.Value(localDialKey{}) != nil {
				return local.DialContext(ctx, network, addr)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0, // no global cap; per host below
		MaxIdleConnsPerHost: 256,
		// MaxConnsPerBackend is enforced by lb.Pool (503 when all are full),
		// not here, where requests would queue instead.
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  cfg.ResponseTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass the app's encoding through untouched
		MaxResponseHeaderBytes: 1 << 20,
	}
}

// localDialKey marks the context of an attempt to a node-local address, so
// the transport dials it with Config.LocalDialTimeout.
type localDialKey struct{}

// errNoBackend is returned when every backend was tried.
var errNoBackend = errors.New("no backend left to try")

// errAllFull is returned when every backend is at MaxConnsPerBackend.
var errAllFull = errors.New("every backend is at its connection limit")

// retryTransport picks the backend of each attempt and retries on another one
// when the connection could not be established — the request never left the
// router, so any method is safe to retry. Other errors are not retried: the
// backend may have acted on the request.
type retryTransport struct {
	r    *Router
	base http.RoundTripper
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(stateKey{}).(*reqState)
	e := st.e
	var body *retryBody
	if req.Body != nil && req.Body != http.NoBody {
		// http.Transport closes the body on any error; shield it so a retry
		// after a failed dial can still send it.
		body = &retryBody{rc: req.Body}
		req.Body = body
	}
	var tried [maxAttempts]*lb.Backend
	lastErr := errNoBackend
	for n := 0; n < maxAttempts; n++ {
		b := e.pool.Pick(t.r.now(), tried[:n], st.sticky)
		if b == nil {
			if n == 0 && e.pool.Full() {
				return nil, errAllFull
			}
			break
		}
		tried[n] = b
		if n > 0 {
			e.m.retry()
		}
		ctx := req.Context()
		if b.Local {
			ctx = context.WithValue(ctx, localDialKey{}, true)
		}
		out := req.WithContext(ctx)
		u := *req.URL
		u.Host = b.Addr
		out.URL = &u
		b.Start()
		resp, err := t.base.RoundTrip(out)
		if err == nil {
			st.backend, st.started = b, true
			return resp, nil
		}
		b.Done()
		e.m.failure()
		lastErr = err
		st.backend = b
		if !retryable(req.Method, err) || req.Context().Err() != nil || (body != nil && body.read.Load()) {
			return nil, err
		}
		b.MarkFailed(t.r.now(), t.r.cfg.FailMark)
		t.r.log.Info("backend refused, retrying", "app", e.route.App, "backend", b.Addr,
			"instance", b.Instance, "request_id", st.id, "err", err)
	}
	return nil, lastErr
}

// retryable reports whether a failed attempt may be sent to another backend:
// always when the connection was never made, and for idempotent methods also
// when the connection broke before any response byte arrived (a backend that
// died while a port proxy in front of it still accepts connections).
func retryable(method string, err error) bool {
	if isDialError(err) {
		return true
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return false
	}
	return staleConn(err)
}

// isDialError reports whether err happened while connecting, before any
// byte of the request was written.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryBody records whether the body was read and ignores Close, which the
// server does for us once the handler returns.
type retryBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *retryBody) Close() error { return nil }
