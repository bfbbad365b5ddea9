package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/router/lb"
	"github.com/dinp/dinp/router/table"
)

// handle answers one request the front serves itself (see parseRequest);
// it returns whether the client connection stays open.
func (fc *frontConn) handle(q *reqHead) bool {
	r := fc.f.r
	fc.st = reqState{start: r.now()}
	st := &fc.st
	fc.bytes = 0
	op := outPool.Get().(*[]byte)
	fc.out = (*op)[:0]
	defer func() {
		*op = fc.out[:0]
		outPool.Put(op)
		fc.out = nil
	}()

	if q.requestID != nil {
		fc.id = q.requestID
	} else {
		putRequestID(fc.idBuf[:])
		fc.id = fc.idBuf[:]
	}
	var keep bool
	switch e, ok := r.table.LookupBytes(q.host); {
	case len(q.host) == 0:
		keep = fc.reject(q, http.StatusBadRequest, ErrEmptyHost, "request has no Host header")
	case !ok:
		keep = fc.reject(q, http.StatusNotFound, ErrUnknownRoute, "no app at "+table.NormalizeHost(string(q.host)))
	case e.pool.Len() == 0:
		st.e = e
		keep = fc.reject(q, http.StatusServiceUnavailable, ErrNoEndpoints, "app "+e.route.App+" has no running instance")
	default:
		st.e = e
		if e.route.Sticky && q.hasCookie {
			st.sticky = stickyFromCookies(q.head)
		}
		keep = fc.proxy(q, e)
	}
	fc.now = r.now()
	if st.e != nil {
		st.e.m.observe(st.status, fc.now.Sub(st.start), fc.bytes)
	}
	if r.alog != nil {
		fc.accessLog(q)
	}
	return keep
}

// putRequestID fills b (32 bytes) with a random hex request id.
func putRequestID(b []byte) {
	_ = b[31]
	v1, v2 := rand.Uint64(), rand.Uint64()
	for j := 0; j < 16; j++ {
		b[j], b[16+j] = hexDigits[v1&15], hexDigits[v2&15]
		v1, v2 = v1>>4, v2>>4
	}
}

// stickyFromCookies returns the StickyCookie value of a request head, read
// by net/http's cookie parser like on the ReverseProxy path (sticky routes
// only: this allocates).
func stickyFromCookies(head []byte) string {
	req := &http.Request{Header: http.Header{}}
	_, i := nextLine(head, 0)
	for i < len(head)-2 {
		var line []byte
		line, i = nextLine(head, i)
		if name, v, _ := headerLine(line); kindOf(name) == hCookie {
			req.Header.Add("Cookie", string(v))
		}
	}
	if c, err := req.Cookie(StickyCookie); err == nil {
		return c.Value
	}
	return ""
}

func (fc *frontConn) accessLog(q *reqHead) {
	path := q.target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if bytes.IndexByte(path, '%') >= 0 {
		if p, err := url.PathUnescape(string(path)); err == nil {
			path = []byte(p)
		}
	}
	var app, backend string
	if fc.st.e != nil {
		app = fc.st.e.route.App
	}
	if fc.st.backend != nil {
		backend = fc.st.backend.Addr
	}
	fc.line = appendAccessLine(fc.line[:0], fc.now, q.host, app, q.method, path, fc.st.status, fc.bytes,
		fc.now.Sub(fc.st.start), backend, fc.id)
	fc.f.r.alog.add(fc.line)
}

// reject answers a request the router cannot route (like Router.reject).
func (fc *frontConn) reject(q *reqHead, status int, code, msg string) bool {
	fc.f.r.metrics.rejected.WithLabelValues(code).Inc()
	body := rejectBody(status, code, msg)
	out := fc.out[:0]
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"...)
	out = append(out, HeaderRouterError...)
	out = append(out, ": "...)
	out = append(out, code...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	if q.close {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	if !q.head1 {
		out = append(out, body...)
		fc.bytes = int64(len(body))
	}
	fc.out = out
	fc.st.status = status
	return fc.flush() && !q.close
}

// flush writes what is gathered in fc.out to the client; false once a
// write to the client failed.
func (fc *frontConn) flush() bool {
	if len(fc.out) > 0 && !fc.werr {
		_, err := fc.c.Write(fc.out)
		fc.werr = err != nil
	}
	fc.out = fc.out[:0]
	return !fc.werr
}

// proxy sends q to up to maxAttempts backends of e (the retry rules of
// retryable) and relays the answer.
func (fc *frontConn) proxy(q *reqHead, e *entry) bool {
	r := fc.f.r
	st := &fc.st
	rp := outPool.Get().(*[]byte)
	req := fc.buildRequest((*rp)[:0], q)
	defer func() {
		*rp = req[:0]
		outPool.Put(rp)
	}()
	method := http.MethodGet
	if q.head1 {
		method = http.MethodHead
	}
	var tried [maxAttempts]*lb.Backend
	var lastErr error = errNoBackend
	for n := 0; n < maxAttempts; n++ {
		now := st.start // the clock was just read
		if n > 0 {
			now = r.now()
		}
		b := e.pool.Pick(now, tried[:n], st.sticky)
		if b == nil {
			if n == 0 && e.pool.Full() {
				return fc.reject(q, http.StatusServiceUnavailable, ErrEndpointsFull, "every instance of app "+e.route.App+" is at its connection limit")
			}
			break
		}
		tried[n] = b
		if n > 0 {
			e.m.retry()
		}
		st.backend = b
		b.Start()
		keep, done, err := fc.attempt(q, req, b)
		b.Done()
		if done {
			return keep
		}
		e.m.failure()
		lastErr = err
		if fc.gone.Load() || !retryable(method, err) {
			break
		}
		b.MarkFailed(r.now(), r.cfg.FailMark)
		r.log.Info("backend failed before answering, retrying", "app", e.route.App, "backend", b.Addr,
			"instance", b.Instance, "request_id", string(fc.id), "err", err)
	}
	if fc.gone.Load() {
		r.log.Debug("client gone", "host", string(q.host), "app", e.route.App, "request_id", string(fc.id), "err", lastErr)
		fc.st.status = http.StatusBadGateway
		return false
	}
	r.log.Warn("backend failure", "host", string(q.host), "app", e.route.App, "request_id", string(fc.id), "err", lastErr)
	return fc.reject(q, http.StatusBadGateway, ErrEndpointFailure, "the app did not answer")
}

// buildRequest appends the outbound request head of q to b: the client's
// end-to-end headers as they came, then the router's own.
func (fc *frontConn) buildRequest(b []byte, q *reqHead) []byte {
	b = append(b, q.method...)
	b = append(b, ' ')
	b = append(b, q.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, q.host...)
	b = append(b, crlf...)
	head := q.head
	_, i := nextLine(head, 0)
	for i < len(head)-2 {
		var line []byte
		line, i = nextLine(head, i)
		name := line[:bytes.IndexByte(line, ':')]
		switch kindOf(name) {
		case hOther, hUserAgent, hCookie, hSetCookie:
			if q.connOther && connectionNames(head, name) {
				continue
			}
			if !fc.trusted && bytes.EqualFold(name, xRealIP) {
				continue // set from the connection below
			}
			b = append(b, line...)
			b = append(b, crlf...)
		}
	}
	if !fc.trusted {
		b = append(b, "X-Real-IP: "...)
		b = append(b, fc.client...)
		b = append(b, crlf...)
	}
	b = append(b, "X-Forwarded-For: "...)
	if q.hasXFF && fc.trusted {
		_, i := nextLine(head, 0)
		for i < len(head)-2 {
			var line []byte
			line, i = nextLine(head, i)
			if name, v, _ := headerLine(line); kindOf(name) == hXFF {
				b = append(b, v...)
				b = append(b, ", "...)
			}
		}
	}
	b = append(b, fc.client...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, q.host...)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	switch {
	case len(q.proto) > 0 && fc.trusted: // set by a TLS terminator in front
		b = append(b, q.proto...)
	case fc.tls:
		b = append(b, "https"...)
	default:
		b = append(b, "http"...)
	}
	b = append(b, "\r\nX-Request-Start: "...)
	if q.start != nil && fc.trusted {
		b = append(b, q.start...)
	} else {
		b = strconv.AppendInt(b, fc.st.start.UnixMilli(), 10)
	}
	b = append(b, "\r\nX-Request-Id: "...)
	b = append(b, fc.id...)
	return append(b, "\r\n\r\n"...)
}

// attempt sends req to b. done means the response was handled (fully or,
// after a mid-body failure, by closing the client connection, keep=false);
// otherwise nothing reached the client and err says why.
func (fc *frontConn) attempt(q *reqHead, req []byte, b *lb.Backend) (keep, done bool, err error) {
	r := fc.f.r
	bc, reused, err := r.conns.get(context.Background(), b.Addr, b.Local, fc.st.start)
	if err != nil {
		return false, false, err
	}
	fc.softArmed = false
	head, consumed, err := fc.roundTrip(bc, q, req)
	if err != nil && reused && staleConn(err) && !fc.gone.Load() {
		// The backend closed an idle connection: try once on a fresh one.
		fc.stopWatch()
		bc.Close()
		if bc, _, err = r.conns.get(context.Background(), b.Addr, b.Local, fc.st.start); err != nil {
			return false, false, err
		}
		head, consumed, err = fc.roundTrip(bc, q, req)
	}
	if err != nil {
		fc.stopWatch()
		bc.Close()
		return false, false, err
	}
	backendKeep, clientKeep := fc.relay(bc, q, head, consumed)
	fc.stopWatch()
	if backendKeep && !fc.gone.Load() {
		r.conns.put(bc, r.now()) // the next roundTrip sets the read deadline
	} else {
		bc.Close()
	}
	return clientKeep && !fc.gone.Load(), true, nil
}

// staleConn reports whether err is a reused connection the backend had
// already closed (not a timeout: the request may be in the app's hands).
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// roundTrip writes req on bc and reads the final response head, parsed into
// fc.p. consumed says whether head was already taken out of bc.br (a head
// too large for its buffer).
func (fc *frontConn) roundTrip(bc *backendConn, q *reqHead, req []byte) (head []byte, consumed bool, err error) {
	if rc, ok := bc.Conn.(*rawConn); ok && bc.br.Buffered() == 0 {
		rc.WriteThenRead(req) // by the first read below
	} else if _, err := bc.Write(req); err != nil {
		return nil, false, errBeforeResponse{err}
	}
	r := fc.f.r
	deadline := fc.st.start.Add(r.cfg.ResponseTimeout)
	// Wait a little without watching the client; most answers come first.
	// This soft deadline stays through the body (fill handles it running
	// out), saving a timer update per request. The deadline an earlier
	// request left on bc is kept while it falls in the second half of this
	// request's wait: on a busy connection the timer is moved once in many
	// requests, not for each (the watch then starts after 100–200 ms).
	if !fc.watching {
		soft := fc.st.start.Add(watchAfter)
		if deadline.Before(soft) {
			soft = deadline
		}
		if bc.rdl.After(soft) || !bc.rdl.After(soft.Add(-watchAfter/2)) || !bc.rdl.After(fc.st.start) {
			bc.SetReadDeadline(soft)
			bc.rdl = soft
		}
		fc.softArmed = true
	} else {
		fc.backendDeadline(bc, deadline)
	}
	sticky := fc.st.e.route.Sticky
	for first := true; ; first = false {
		if _, err := bc.br.Peek(1); err != nil {
			if fc.slowBackend(bc, err, deadline) {
				continue
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if first {
				return nil, false, errBeforeResponse{err}
			}
			return nil, false, err
		}
		head, err = peekHead(bc.br)
		consumed = false
		if errors.Is(err, errHeadTooBig) {
			head, err = readHeadSlow(bc.br, maxResponseHead)
			consumed = true
		}
		if err != nil {
			if !consumed && fc.slowBackend(bc, err, deadline) {
				continue
			}
			return nil, false, err
		}
		if err := parseResponse(head, &fc.p, sticky, r.cfg.StickyCookies); err != nil {
			return nil, false, err
		}
		if fc.p.status < 200 {
			if fc.p.status == http.StatusSwitchingProtocols {
				return nil, false, errors.New("backend switched protocols without an upgrade request")
			}
			if !consumed {
				bc.br.Discard(len(head))
			}
			continue // 1xx informational: wait for the final answer
		}
		if fc.watching {
			fc.backendDeadline(bc, time.Time{}) // the response timeout is for the head only
		}
		return head, consumed, nil
	}
}

// backendDeadline sets bc's read deadline while the client may be watched:
// a client that left must keep the backend read cancelled, whichever of
// this call and the watcher's cancel (gone is set before it) comes last.
func (fc *frontConn) backendDeadline(bc *backendConn, t time.Time) {
	bc.SetReadDeadline(t)
	bc.rdl = t
	if fc.gone.Load() {
		bc.SetDeadline(aLongTimeAgo)
		bc.rdl = aLongTimeAgo
	}
}

// slowBackend handles a read error while waiting for a response head: when
// it is the short first deadline running out, it starts watching the client
// and extends the deadline to the response timeout (true: read again).
func (fc *frontConn) slowBackend(bc *backendConn, err error, deadline time.Time) bool {
	if fc.watching || fc.gone.Load() || !common.IsTimeout(err) || !time.Now().Before(deadline) {
		return false
	}
	fc.startWatch(bc)
	fc.backendDeadline(bc, deadline)
	return true
}

// xRealIP is the header the router sets to the client's address unless the
// peer is a trusted proxy.
var xRealIP = []byte("X-Real-IP")
