package router

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Client limits, on both paths. Every client connection is accepted by the
// front (front.go), which serves bodiless GET/HEAD itself and hands every
// other request, with its connection, to net/http:
//
//   - MaxConnsPerAddr caps the open connections of one client address. It
//     is counted where connections are accepted, so a connection counts
//     until it closes whichever path serves it; one over the cap gets a 503
//     (ErrTooManyConns) and is closed before anything of it is read.
//   - BodyIdleTimeout cuts a client that stops sending its request body:
//     every body read must make progress within it, or the request ends with
//     408 (ErrBodyTimeout) and the connection closes. Only net/http reads
//     bodies (the front hands requests with one over), so that is where the
//     deadline is armed; the front's own header deadline covers heads.

// Codes of the router's own answers for the client limits.
const (
	// ErrTooManyConns: the client address has MaxConnsPerAddr connections open.
	ErrTooManyConns = "too_many_connections"
	// ErrBodyTimeout: the client sent nothing of its body for BodyIdleTimeout.
	ErrBodyTimeout = "body_timeout"
)

// connLimiter counts open connections per client address.
type connLimiter struct {
	max int // 0: unlimited
	mu  sync.Mutex
	n   map[string]int // guarded by mu
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, n: map[string]int{}}
}

// acquire counts a connection of ip; false when ip is at the cap.
func (l *connLimiter) acquire(ip string) bool {
	if l.max <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] >= l.max {
		return false
	}
	l.n[ip]++
	return true
}

// release uncounts a connection of ip.
func (l *connLimiter) release(ip string) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] <= 1 {
		delete(l.n, ip)
		return
	}
	l.n[ip]--
}

// tooManyConns answers a connection over the cap (counted) and closes it.
func (r *Router) tooManyConns(c net.Conn) {
	out, _ := r.appendReject(nil, &reqHead{close: true},
		rejection{http.StatusServiceUnavailable, ErrTooManyConns, "too many connections from this address"})
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(out)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite() // let the client read the answer before the close
	}
	c.Close()
}

// releaseOnClose uncounts the connection when net/http closes it.
type releaseOnClose struct {
	once    sync.Once
	release func()
}

func (r *releaseOnClose) done() {
	if r != nil {
		r.once.Do(r.release)
	}
}

// idleBody is a request body whose every read must progress within idle:
// each Read arms the connection's read deadline, a read that hits it marks
// the request (timedOut) so the router answers 408.
type idleBody struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	idle     time.Duration
	timedOut atomic.Bool
	closed   bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.ctl.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.rc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut.Store(true)
	} else if err == io.EOF {
		b.ctl.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *idleBody) Close() error {
	if !b.timedOut.Load() {
		// The rest of the exchange (a long response) is not the body's.
		b.ctl.SetReadDeadline(time.Time{})
	}
	return b.rc.Close()
}

// watchBody wraps req's body with BodyIdleTimeout (nil when off or there is
// no body).
func (r *Router) watchBody(w http.ResponseWriter, req *http.Request) *idleBody {
	if r.cfg.BodyIdleTimeout <= 0 || req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	b := &idleBody{rc: req.Body, ctl: http.NewResponseController(w), idle: r.cfg.BodyIdleTimeout}
	req.Body = b
	return b
}
