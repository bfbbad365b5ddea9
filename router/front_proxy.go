package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/router/lb"
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

	fc.id = requestID(q.requestID, &fc.idBuf)
	var keep bool
	if rej := r.routeRequest(q, st); rej.status != 0 {
		keep = fc.reject(q, rej)
	} else {
		keep = fc.proxy(q, st.e)
	}
	fc.now = r.now()
	fc.line = finishRequest(r, st, fc.now, st.status, fc.bytes, q.host, q.method, accessPath(q.target), fc.id, fc.line)
	return keep
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

// reject answers a request the router cannot route or serve.
func (fc *frontConn) reject(q *reqHead, rej rejection) bool {
	fc.out, fc.bytes = fc.f.r.appendReject(fc.out[:0], q, rej)
	fc.st.status = rej.status
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
	req := r.appendOutboundHead((*rp)[:0], q, &fc.ci, st.start, fc.id)
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
				return fc.reject(q, rejectEndpointsFull(e.route.App))
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
	return fc.reject(q, rejectEndpointFailure)
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
