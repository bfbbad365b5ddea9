//go:build linux

package router

import (
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/dinp/dinp/router/lb"
)

// loopConn is a client connection served by an event loop (loop.go). It
// serves one request at a time: reading its head, sending it to a backend
// (attempts and retries like the goroutine front's), relaying the answer,
// then the next request.
type loopConn struct {
	l       *evLoop
	fd      int
	release *releaseOnClose

	// fc holds the per-request state the paths share (head, response,
	// request state, id, counters) and builds the outbound head and the
	// access log line like the goroutine front does.
	fc frontConn

	rbuf     []byte // client bytes; the head being served stays at rbuf[:hlen]
	rn, hlen int
	readable bool // edge-triggered: bytes may be waiting
	inHeads  bool // readHeads is running
	rdhup    bool // the client closed its side: read to the end, short reads included
	writable bool
	closed   bool

	deadline time.Time
	dlKind   uint8

	// The request in flight.
	inFlight    bool
	gone        bool // the client closed or failed while the request was in flight
	keep        bool // the client connection stays open after the answer
	req         []byte
	tried       [maxAttempts]*lb.Backend
	attempts    int
	freshTried  bool // the one retry on a fresh connection after a stale reused one
	lastErr     error
	bc          *loopBackend
	started     bool // fc.st.backend counts this request in flight
	headDone    bool // the response head is on its way to the client
	backendKeep bool // the backend connection can serve another request after this answer
	respDone    bool // the whole answer is in out: finish once it is written
	body        bodyScan
	outOff      int
	outp        *[]byte // from outPool while a request is served; fc.out is *outp's
}

// What a loopConn's deadline ends.
const (
	dlNone uint8 = iota
	dlIdle
	dlHead
	dlDial
	dlResponse
	dlWrite
)

func (c *loopConn) setDeadline(kind uint8, t time.Time) {
	c.dlKind, c.deadline = kind, t
	if kind != dlNone {
		c.l.deadline(t)
	}
}

func (c *loopConn) idleSince(now time.Time) {
	if c.rn == 0 {
		c.setDeadline(dlIdle, now.Add(frontIdle))
	} else {
		c.setDeadline(dlHead, now.Add(frontHeader))
	}
}

// idle: no request in flight and none started.
func (c *loopConn) idle() bool { return !c.inFlight && c.rn == 0 }

func (c *loopConn) checkDeadline() {
	if c.dlKind == dlNone {
		return
	}
	if c.l.now.Before(c.deadline) {
		c.l.deadline(c.deadline)
		return
	}
	switch kind := c.dlKind; kind {
	case dlIdle, dlHead, dlWrite:
		c.close()
	case dlDial:
		c.setDeadline(dlNone, time.Time{})
		c.attemptFailed(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, true)
	case dlResponse:
		c.setDeadline(dlNone, time.Time{})
		c.attemptFailed(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, false)
	}
}

func (c *loopConn) event(ev uint32) {
	if ev&evOut != 0 {
		c.writable = true
		if c.outOff < len(c.fc.out) || c.respDone {
			c.drained()
		}
	}
	if c.closed {
		return
	}
	if ev&(evIn|evRDHup|evErr) != 0 {
		c.readable = true
		c.rdhup = c.rdhup || ev&(evRDHup|evErr) != 0
		if c.inFlight {
			c.readAhead()
		} else {
			c.readHeads()
		}
	}
}

// readHeads reads and serves requests until none is complete. A request
// answered at once (a reject) finishes inside serve and calls readHeads
// again: that call returns and this loop goes on, so a client pipelining
// such requests without end cannot make the stack grow.
func (c *loopConn) readHeads() {
	if c.inHeads {
		return
	}
	c.inHeads = true
	defer func() { c.inHeads = false }()
	for !c.closed && !c.inFlight {
		if h := headIn(c.rbuf[:c.rn]); h != nil {
			c.serve(h)
			continue
		}
		if c.rn == len(c.rbuf) {
			c.handOff() // a head larger than the buffer: net/http's
			return
		}
		if !c.readable {
			return
		}
		first := c.rn == 0
		switch c.read() {
		case readNone:
			return
		case readEnd:
			c.close()
			return
		}
		if first {
			c.setDeadline(dlHead, c.l.now.Add(frontHeader))
		}
	}
}

// readAhead reads what the client sends while its request is in flight:
// pipelined requests (kept for later) or the end of the connection.
func (c *loopConn) readAhead() {
	for c.readable && c.rn < len(c.rbuf) {
		if c.read() == readEnd {
			c.clientGone()
			return
		}
	}
}

// Results of loopConn.read.
const (
	readSome = iota // bytes were added to rbuf
	readNone        // nothing waiting
	readEnd         // the client closed or failed
)

// read reads what fits of the client's bytes into rbuf.
func (c *loopConn) read() int {
	space := len(c.rbuf) - c.rn
	n, e := sysRead(c.fd, c.rbuf[c.rn:])
	switch {
	case e == syscall.EAGAIN:
		c.readable = false
		return readNone
	case e != 0 || n == 0:
		return readEnd
	}
	c.rn += n
	if n < space && !c.rdhup {
		c.readable = false // edge-triggered: drained (a new edge comes with more)
	}
	return readSome
}

// serve starts serving the request whose head is h (at the start of rbuf).
func (c *loopConn) serve(h []byte) {
	fc := &c.fc
	switch parseRequest(h, &fc.q) {
	case handOver:
		c.handOff()
		return
	case badFraming:
		c.writeAndClose("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
			"400 Bad Request: both Content-Length and Transfer-Encoding\n")
		return
	}
	r := c.l.r
	c.hlen = len(h)
	c.inFlight, c.gone, c.headDone, c.respDone = true, false, false, false
	c.attempts, c.freshTried, c.lastErr = 0, false, nil
	c.setDeadline(dlNone, time.Time{})
	fc.st = reqState{start: r.now()}
	fc.bytes = 0
	if c.outp == nil { // the answer's buffer, for this request only (see finish)
		c.outp = outPool.Get().(*[]byte)
	}
	fc.out = (*c.outp)[:0]
	c.outOff = 0
	q := &fc.q
	fc.id = requestID(q.requestID, &fc.idBuf)
	if rej := r.routeRequest(q, &fc.st); rej.status != 0 {
		c.reject(rej)
		return
	}
	c.req = r.appendOutboundHead(c.req[:0], q, &fc.ci, fc.st.start, fc.id)
	c.nextAttempt()
}

// nextAttempt sends the request to a backend it was not sent to yet, or
// gives up.
func (c *loopConn) nextAttempt() {
	fc := &c.fc
	e := fc.st.e
	r := c.l.r
	if c.attempts == maxAttempts || c.gone {
		c.giveUp()
		return
	}
	now := fc.st.start
	if c.attempts > 0 {
		now = r.now()
	}
	b := e.pool.Pick(now, c.tried[:c.attempts], fc.st.sticky)
	if b == nil {
		if c.attempts == 0 && e.pool.Full() {
			c.reject(rejectEndpointsFull(e.route.App))
			return
		}
		c.giveUp()
		return
	}
	c.tried[c.attempts] = b
	if c.attempts > 0 {
		e.m.retry()
	}
	c.attempts++
	c.freshTried = false
	fc.st.backend = b
	b.Start()
	c.started = true
	c.send(b, false)
}

// send writes the request on a connection to b: an idle one unless fresh.
func (c *loopConn) send(b *lb.Backend, fresh bool) {
	var bc *loopBackend
	if !fresh {
		bc = c.l.takeIdle(b.Addr, c.l.now)
	}
	if bc == nil {
		var err error
		if bc, err = c.l.dial(b.Addr); err != nil {
			c.bc = nil
			c.attemptFailed(err, true)
			return
		}
	}
	c.bc = bc
	bc.owner = c
	bc.sent = 0
	if bc.connecting {
		t := c.l.cfgDialTimeout(b.Local)
		c.setDeadline(dlDial, c.l.now.Add(t))
		return
	}
	c.setDeadline(dlResponse, c.fc.st.start.Add(c.l.r.cfg.ResponseTimeout))
	bc.writeRequest()
}

// attemptFailed ends an attempt that reached the client with nothing:
// retried on a fresh connection (a reused one the backend had closed), on
// another backend (the retry rules of retryable) or given up.
func (c *loopConn) attemptFailed(err error, dial bool) {
	fc := &c.fc
	r := c.l.r
	b := fc.st.backend
	reused := c.bc != nil && c.bc.reused
	c.dropBackend()
	if !dial && reused && staleConn(err) && !c.gone && !c.freshTried {
		c.freshTried = true
		b.Start()
		c.started = true
		c.send(b, true)
		return
	}
	e := fc.st.e
	e.m.failure()
	c.lastErr = err
	if c.gone || !retryable(http.MethodGet, err) {
		c.giveUp()
		return
	}
	b.MarkFailed(r.now(), r.cfg.FailMark)
	r.log.Info("backend failed before answering, retrying", "app", e.route.App, "backend", b.Addr,
		"instance", b.Instance, "request_id", string(fc.id), "err", err)
	c.nextAttempt()
}

// dropBackend closes the request's backend connection (not reusable) and
// ends the backend's count of the request.
func (c *loopConn) dropBackend() {
	if c.bc != nil {
		c.bc.owner = nil
		c.l.forget(c.bc.fd)
		c.bc.release()
		c.bc = nil
	}
	if c.started {
		c.started = false
		c.fc.st.backend.Done()
	}
}

// giveUp answers 502 after failed attempts (or just ends when the client
// is gone).
func (c *loopConn) giveUp() {
	fc := &c.fc
	r := c.l.r
	if c.gone {
		r.log.Debug("client gone", "host", string(fc.q.host), "app", fc.st.e.route.App, "request_id", string(fc.id), "err", c.lastErr)
		fc.st.status = http.StatusBadGateway
		c.keep = false
		c.finish()
		return
	}
	if c.lastErr == nil {
		c.lastErr = errNoBackend
	}
	r.log.Warn("backend failure", "host", string(fc.q.host), "app", fc.st.e.route.App, "request_id", string(fc.id), "err", c.lastErr)
	c.reject(rejectEndpointFailure)
}

// reject answers the request with the router's own answer.
func (c *loopConn) reject(rej rejection) {
	fc := &c.fc
	fc.out, fc.bytes = c.l.r.appendReject(fc.out[:0], &fc.q, rej)
	fc.st.status = rej.status
	c.keep = !fc.q.close
	c.respDone = true
	c.drained()
}

// clientGone handles the client leaving while its request is in flight.
func (c *loopConn) clientGone() {
	c.gone = true
	c.keep = false
	if c.respDone {
		c.finish()
		return
	}
	if !c.headDone {
		if c.started {
			c.dropBackend()
			c.fc.st.e.m.failure()
		}
		c.giveUp()
		return
	}
	// Mid-body: the backend connection cannot be reused.
	c.dropBackend()
	c.finish()
}

// flushOut writes out; false while some of it waits for the client to
// read (or the client failed).
func (c *loopConn) flushOut() bool {
	out := c.fc.out
	for c.outOff < len(out) {
		if !c.writable {
			return false
		}
		n, e := sysWrite(c.fd, out[c.outOff:])
		switch {
		case e == syscall.EAGAIN:
			c.writable = false
			if wt := c.l.r.cfg.ClientWriteTimeout; wt > 0 {
				c.setDeadline(dlWrite, c.l.now.Add(wt))
			}
			return false
		case e != 0:
			c.fc.werr = true
			return false
		}
		c.outOff += n
	}
	c.fc.out = out[:0]
	c.outOff = 0
	if c.dlKind == dlWrite {
		c.setDeadline(dlNone, time.Time{})
	}
	return true
}

// drained writes what is pending and moves the request on.
func (c *loopConn) drained() {
	if !c.flushOut() {
		if c.fc.werr {
			c.clientGone()
		}
		return
	}
	switch {
	case c.respDone:
		c.finish()
	case c.bc != nil && c.headDone:
		c.bc.relay() // the client read what we had: read more of the body
	}
}

// finish ends the request: metrics, access log, then the next request or
// the end of the connection.
func (c *loopConn) finish() {
	fc := &c.fc
	r := c.l.r
	fc.now = r.now()
	q := &fc.q
	fc.line = finishRequest(r, &fc.st, fc.now, fc.st.status, fc.bytes, q.host, q.method, accessPath(q.target), fc.id, fc.line)
	c.inFlight, c.respDone, c.headDone = false, false, false
	c.fc.st = reqState{}
	c.putOut()
	copy(c.rbuf, c.rbuf[c.hlen:c.rn])
	c.rn -= c.hlen
	c.hlen = 0
	if !c.keep || c.gone || c.fc.werr || c.l.f.closing.Load() {
		c.close()
		return
	}
	c.idleSince(c.l.now)
	c.readHeads()
}

// putOut returns the answer's buffer: an idle connection holds none, so
// 10,000 keep-alive clients cost their read buffers only, whatever
// answers they once got.
func (c *loopConn) putOut() {
	if c.outp == nil {
		return
	}
	*c.outp = c.fc.out[:0]
	outPool.Put(c.outp)
	c.outp, c.fc.out = nil, nil
}

// writeAndClose answers with a fixed message and closes (malformed
// requests).
func (c *loopConn) writeAndClose(msg string) {
	sysWrite(c.fd, []byte(msg))
	c.close()
}

// close closes the client connection (and, with a request in flight, its
// backend connection).
func (c *loopConn) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.dropBackend()
	c.l.forget(c.fd)
	c.putOut()
	c.done()
}

// done releases what the connection holds once its descriptor is gone.
func (c *loopConn) done() {
	c.release.done()
	putLoopBuf(c.rbuf)
	c.rbuf = nil
	c.l.nconns--
	c.l.ls.open.Add(-1)
	c.l.f.wg.Done()
}

// handOff gives the connection, with what was read of it, to net/http.
func (c *loopConn) handOff() {
	c.closed = true
	c.l.fds[c.fd] = nil
	syscall.EpollCtl(c.l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	f := os.NewFile(uintptr(c.fd), "")
	nc, err := net.FileConn(f) // a duplicate in Go's poller
	f.Close()
	pre := append([]byte(nil), c.rbuf[:c.rn]...)
	release := c.release
	c.release = nil
	c.done()
	if err != nil {
		c.l.r.log.Warn("handing a connection to net/http failed", "err", err)
		release.done()
		return
	}
	pc := &prefixConn{Conn: newRawConn(nc, c.l.r.cfg.ClientWriteTimeout), pre: pre, release: release}
	ho := c.l.f.handoff
	go func() {
		if !ho.give(pc) {
			pc.Close()
		}
	}()
}
