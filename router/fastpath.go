package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dinp/dinp/router/lb"
)

// The fast path proxies body-less GET and HEAD requests — nearly all of a
// web app's traffic — over the router's own keep-alive connections: the
// request goroutine writes the request and reads the answer itself. That
// avoids http.Transport's two goroutines per connection and their channel
// hand-offs, and httputil.ReverseProxy's request clones, which on a small
// machine cost about half the router's throughput. Everything else (bodies,
// upgrades, other methods) goes through httputil.ReverseProxy.

// fastPathOK reports whether req can take the fast path.
func fastPathOK(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	if _, up := req.Header["Upgrade"]; up {
		return false
	}
	return true
}

// hopHeaders are hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// setHeaders are request headers the fast path writes itself.
var setHeaders = map[string]bool{
	"Host": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
	"X-Request-Id": true, "X-Request-Start": true, "Content-Length": true,
}

// connectionListed reports whether the Connection header values name key.
func connectionListed(h http.Header, key string) bool {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), key) {
				return true
			}
		}
	}
	return false
}

// backendConn is one keep-alive connection to a backend, owned by one
// request at a time.
type backendConn struct {
	net.Conn
	addr string
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // last returned to the pool
}

// connPool holds idle connections per backend address.
type connPool struct {
	dialer      net.Dialer
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*backendConn // guarded by mu
	closed bool                      // guarded by mu
}

func newConnPool(cfg Config) *connPool {
	return &connPool{
		dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		maxIdle:     256,
		idleTimeout: 90 * time.Second,
		idle:        map[string][]*backendConn{},
	}
}

// get returns an idle connection to addr (reused=true) or dials one.
func (p *connPool) get(ctx context.Context, addr string, now time.Time) (*backendConn, bool, error) {
	p.mu.Lock()
	for list := p.idle[addr]; len(list) > 0; list = p.idle[addr] {
		bc := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		if now.Sub(bc.used) < p.idleTimeout {
			p.mu.Unlock()
			return bc, true, nil
		}
		bc.Close()
	}
	p.mu.Unlock()
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &backendConn{Conn: c, addr: addr, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, false, nil
}

// put returns a healthy connection for reuse.
func (p *connPool) put(bc *backendConn, now time.Time) {
	bc.used = now
	p.mu.Lock()
	if p.closed || len(p.idle[bc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		bc.Close()
		return
	}
	p.idle[bc.addr] = append(p.idle[bc.addr], bc)
	p.mu.Unlock()
}

// sweep closes connections idle for idleTimeout or more, so connections to
// backends that left every route (old releases) do not pile up.
func (p *connPool) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		keep := list[:0]
		for _, bc := range list {
			if now.Sub(bc.used) >= p.idleTimeout {
				bc.Close()
			} else {
				keep = append(keep, bc)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = keep
		}
	}
}

// close closes every idle connection and stops pooling.
func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, list := range p.idle {
		for _, bc := range list {
			bc.Close()
		}
		delete(p.idle, addr)
	}
}

// errBeforeResponse marks an attempt that failed before any response byte
// arrived: an idempotent request may be sent again.
type errBeforeResponse struct{ err error }

func (e errBeforeResponse) Error() string { return e.err.Error() }
func (e errBeforeResponse) Unwrap() error { return e.err }

// fastProxy serves req (see fastPathOK) with up to maxAttempts backends.
func (r *Router) fastProxy(w *recorder, req *http.Request, st *reqState) {
	e := st.e
	ctx := req.Context()
	var tried [maxAttempts]*lb.Backend
	var lastErr error = errNoBackend
	for n := 0; n < maxAttempts; n++ {
		now := r.now()
		b := e.pool.Pick(now, tried[:n], st.sticky)
		if b == nil {
			if n == 0 && e.pool.Full() {
				r.reject(w, http.StatusServiceUnavailable, ErrEndpointsFull, "every instance of app "+e.route.App+" is at its connection limit")
				return
			}
			break
		}
		tried[n] = b
		if n > 0 {
			e.m.retry()
		}
		st.backend = b
		end := b.Begin()
		done, err := r.fastAttempt(w, req, st, b)
		end()
		if done {
			return
		}
		e.m.failure()
		lastErr = err
		if ctx.Err() != nil || !retryable(req, err) {
			break
		}
		b.MarkFailed(r.now(), r.cfg.FailMark)
		r.log.Info("backend failed before answering, retrying", "app", e.route.App, "backend", b.Addr,
			"instance", b.Instance, "request_id", st.id, "err", err)
	}
	r.backendError(w, req, st, lastErr)
}

// fastAttempt sends req to b. done means the response was handled (fully
// or, after a mid-body failure, by aborting the client connection); otherwise
// nothing was written to the client and err says why.
func (r *Router) fastAttempt(w *recorder, req *http.Request, st *reqState, b *lb.Backend) (done bool, err error) {
	ctx := req.Context()
	bc, reused, err := r.conns.get(ctx, b.Addr, st.start)
	if err != nil {
		return false, err
	}
	// A client that goes away unblocks the backend read.
	stop := context.AfterFunc(ctx, func() { bc.SetDeadline(time.Unix(1, 0)) })
	defer func() { stop() }()
	resp, err := r.roundTrip(bc, req, st)
	if err != nil && reused && ctx.Err() == nil {
		var eb errBeforeResponse
		if errors.As(err, &eb) {
			// The backend closed an idle connection: try once on a fresh one.
			bc.Close()
			stop()
			if bc, _, err = r.conns.get(ctx, b.Addr, st.start); err != nil {
				return false, err
			}
			stop = context.AfterFunc(ctx, func() { bc.SetDeadline(time.Unix(1, 0)) })
			resp, err = r.roundTrip(bc, req, st)
		}
	}
	if err != nil {
		bc.Close()
		return false, err
	}
	keep := r.writeResponse(w, req, st, resp)
	if stop() && keep {
		r.conns.put(bc, r.now())
	} else {
		bc.Close()
	}
	return true, nil
}

// roundTrip writes req on bc and reads the response head.
func (r *Router) roundTrip(bc *backendConn, req *http.Request, st *reqState) (*http.Response, error) {
	writeRequest(bc.bw, req, st)
	if err := bc.bw.Flush(); err != nil {
		return nil, errBeforeResponse{err}
	}
	bc.SetReadDeadline(r.now().Add(r.cfg.ResponseTimeout))
	for {
		if _, err := bc.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, errBeforeResponse{err}
		}
		resp, err := http.ReadResponse(bc.br, req)
		if err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				return nil, errors.New("backend switched protocols without an upgrade request")
			}
			continue // 1xx informational: wait for the final answer
		}
		bc.SetReadDeadline(time.Time{})
		return resp, nil
	}
}

// writeRequest writes the outbound request head with the router's headers.
func writeRequest(bw *bufio.Writer, req *http.Request, st *reqState) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	h := req.Header
	_, hasConn := h["Connection"]
	for k, vs := range h {
		if hopHeaders[k] || setHeaders[k] || (hasConn && connectionListed(h, k)) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("X-Forwarded-For: ")
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		bw.WriteString(strings.Join(prior, ", "))
		bw.WriteString(", ")
	}
	client, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		client = req.RemoteAddr
	}
	bw.WriteString(client)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\nX-Forwarded-Proto: ")
	switch proto := h.Get("X-Forwarded-Proto"); {
	case proto != "": // set by a TLS terminator in front
		bw.WriteString(proto)
	case req.TLS != nil:
		bw.WriteString("https")
	default:
		bw.WriteString("http")
	}
	bw.WriteString("\r\nX-Request-Start: ")
	if v := h.Get("X-Request-Start"); v != "" {
		bw.WriteString(v)
	} else {
		var buf [20]byte
		bw.Write(strconv.AppendInt(buf[:0], st.start.UnixMilli(), 10))
	}
	bw.WriteString("\r\nX-Request-Id: ")
	bw.WriteString(st.id)
	bw.WriteString("\r\n\r\n")
}

// bufPool holds the body copy buffers of both proxy paths.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type proxyBufferPool struct{}

func (proxyBufferPool) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (proxyBufferPool) Put(b []byte) { bufPool.Put(&b) }

// writeResponse copies resp to the client; it returns whether the backend
// connection can be reused (the body was read to its end).
func (r *Router) writeResponse(w *recorder, req *http.Request, st *reqState, resp *http.Response) bool {
	dst := w.Header()
	_, hasConn := resp.Header["Connection"]
	for k, vs := range resp.Header {
		if hopHeaders[k] || (hasConn && connectionListed(resp.Header, k)) {
			continue
		}
		dst[k] = vs
	}
	for k := range resp.Trailer {
		dst.Add("Trailer", k)
	}
	r.stick(dst, st, resp)
	w.WriteHeader(resp.StatusCode)
	// Streams (unknown length, server-sent events) are flushed after every
	// read so the client sees each event as soon as the app sends it.
	stream := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false // client gone; the backend connection is mid-body
			}
			if stream {
				w.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The backend broke mid-body: the client must not take a
			// truncated body for a complete one.
			r.log.Warn("backend failed mid-response", "app", st.e.route.App, "backend", st.backend.Addr,
				"request_id", st.id, "err", rerr)
			st.aborted = true
			return false
		}
	}
	for k, vs := range resp.Trailer {
		dst[k] = vs
	}
	return !resp.Close
}
