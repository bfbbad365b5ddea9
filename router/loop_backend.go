//go:build linux

package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// loopBackend is a keep-alive connection from an event loop to a backend,
// owned by one request at a time (owner) and otherwise idle in the loop's
// pool. An idle connection stays registered: any event on it (the app
// closed it, or sent bytes nobody asked for) retires it.
type loopBackend struct {
	l          *evLoop
	fd         int
	addr       string
	owner      *loopConn
	rbuf       []byte
	rn, roff   int // rbuf[roff:rn] is read and not yet relayed
	used       time.Time
	reused     bool
	connecting bool
	readable   bool
	rdhup      bool // the backend closed its side: read to the end, short reads included
	writable   bool
	sent       int // bytes of owner.req written
}

// loopOutMax bounds the response bytes gathered for the client before the
// loop waits for it to read them.
const loopOutMax = 64 << 10

func (l *evLoop) cfgDialTimeout(local bool) time.Duration {
	if local {
		return l.r.cfg.LocalDialTimeout
	}
	return l.r.cfg.DialTimeout
}

// takeIdle returns an idle connection to addr, or nil.
func (l *evLoop) takeIdle(addr string, now time.Time) *loopBackend {
	list := l.idle[addr]
	for len(list) > 0 {
		bc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		l.idle[addr] = list
		if now.Sub(bc.used) >= l.r.conns.idleTimeout {
			l.forget(bc.fd)
			bc.release()
			continue
		}
		bc.reused = true
		bc.rbuf = getLoopBuf(frontOutBuffer)
		return bc
	}
	return nil
}

// putIdle keeps a connection whose answer was read whole for reuse.
func (l *evLoop) putIdle(bc *loopBackend) {
	list := l.idle[bc.addr]
	if len(list) >= l.r.conns.maxIdle || l.f.closing.Load() {
		l.forget(bc.fd)
		bc.release()
		return
	}
	bc.owner, bc.used, bc.rn, bc.roff = nil, l.now, 0, 0
	bc.release() // an idle connection holds no buffer
	l.idle[bc.addr] = append(list, bc)
}

// dropIdle retires an idle connection.
func (l *evLoop) dropIdle(bc *loopBackend) {
	list := l.idle[bc.addr]
	for i, x := range list {
		if x == bc {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(l.idle, bc.addr)
	} else {
		l.idle[bc.addr] = list
	}
	l.forget(bc.fd)
	bc.release()
}

func (bc *loopBackend) checkIdle() {
	if bc.owner == nil && bc.l.now.Sub(bc.used) >= bc.l.r.conns.idleTimeout {
		bc.l.dropIdle(bc)
	}
}

func (bc *loopBackend) release() {
	putLoopBuf(bc.rbuf)
	bc.rbuf = nil
}

// dial starts connecting to addr (an IP address and port, as routes hold).
func (l *evLoop) dial(addr string) (*loopBackend, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if a := ap.Addr().Unmap(); a.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr(os.NewSyscallError("socket", err))
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 30)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 30)
	connecting := false
	switch err := syscall.Connect(fd, sa); err {
	case nil:
	case syscall.EINPROGRESS, syscall.EINTR:
		connecting = true
	default:
		syscall.Close(fd)
		return nil, opErr(os.NewSyscallError("connect", err))
	}
	bc := &loopBackend{l: l, fd: fd, addr: addr, rbuf: getLoopBuf(frontOutBuffer), connecting: connecting, writable: !connecting}
	if err := l.add(fd, evIn|evOut|evRDHup|evET, bc); err != nil {
		syscall.Close(fd)
		bc.release()
		return nil, opErr(err)
	}
	return bc, nil
}

func (bc *loopBackend) event(ev uint32) {
	c := bc.owner
	if c == nil {
		bc.l.dropIdle(bc)
		return
	}
	if bc.connecting && ev&(evOut|evErr) != 0 {
		bc.connected()
		if bc.owner != c {
			return
		}
	} else if ev&evOut != 0 {
		bc.writable = true
		if bc.sent < len(c.req) {
			bc.writeRequest()
			if bc.owner != c {
				return
			}
		}
	}
	if ev&(evIn|evRDHup|evErr) != 0 && !bc.connecting {
		bc.readable = true
		bc.rdhup = bc.rdhup || ev&(evRDHup|evErr) != 0
		bc.relay()
	}
}

// connected finishes connecting: the request goes out, or the attempt
// failed.
func (bc *loopBackend) connected() {
	c := bc.owner
	bc.connecting = false
	errno, err := syscall.GetsockoptInt(bc.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	if err == nil && errno != 0 {
		err = os.NewSyscallError("connect", syscall.Errno(errno))
	}
	if err != nil {
		c.setDeadline(dlNone, time.Time{})
		c.attemptFailed(&net.OpError{Op: "dial", Net: "tcp", Err: err}, true)
		return
	}
	bc.writable = true
	c.setDeadline(dlResponse, c.fc.st.start.Add(c.l.r.cfg.ResponseTimeout))
	bc.writeRequest()
}

// writeRequest writes (the rest of) the owner's request head.
func (bc *loopBackend) writeRequest() {
	c := bc.owner
	req := c.req
	for bc.sent < len(req) {
		if !bc.writable {
			return
		}
		n, e := sysWrite(bc.fd, req[bc.sent:])
		switch {
		case e == syscall.EAGAIN:
			bc.writable = false
			return
		case e != 0:
			c.attemptFailed(&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", e)}, false)
			return
		}
		bc.sent += n
	}
}

// relay moves the answer on: what is buffered to the client, then more
// from the backend, until one of them has to be waited for.
func (bc *loopBackend) relay() {
	c := bc.owner
	for {
		if !bc.process() {
			return
		}
		if !c.flushOut() {
			if c.fc.werr {
				c.clientGone()
			}
			return // the client's EPOLLOUT calls drained, then relay
		}
		if !bc.readable || bc.sent < len(c.req) {
			return
		}
		if bc.rn == len(bc.rbuf) {
			switch {
			case bc.roff > 0:
				bc.rn = copy(bc.rbuf, bc.rbuf[bc.roff:bc.rn])
				bc.roff = 0
			case !c.headDone && len(bc.rbuf) < maxResponseHead:
				nb := make([]byte, min(4*len(bc.rbuf), maxResponseHead))
				copy(nb, bc.rbuf)
				bc.release()
				bc.rbuf = nb
			case !c.headDone:
				c.attemptFailed(errHeadTooBig, false)
				return
			default:
				c.midBody(errBadChunk) // a chunk line longer than the buffer
				return
			}
		}
		space := len(bc.rbuf) - bc.rn
		n, e := sysRead(bc.fd, bc.rbuf[bc.rn:])
		switch {
		case e == syscall.EAGAIN:
			bc.readable = false
			return
		case e != 0:
			bc.broken(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", e)})
			return
		case n == 0:
			bc.broken(io.EOF)
			return
		}
		bc.rn += n
		if n < space && !bc.rdhup {
			bc.readable = false // edge-triggered: drained (a new edge comes with more)
		}
	}
}

// broken handles the backend ending the connection (io.EOF) or failing.
func (bc *loopBackend) broken(err error) {
	c := bc.owner
	switch {
	case !c.headDone:
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.attemptFailed(err, false)
	case err == io.EOF && c.body.mode == bodyToEOF:
		// The end of the body: relay what is buffered, then done.
		c.body.eof = true
		c.backendKeep = false
		bc.readable = false
		bc.relay()
	default:
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.midBody(err)
	}
}

// process parses the response head once it is whole and moves buffered
// body bytes to the client's out buffer. It returns true when the answer
// needs more (bytes from the backend, or the client to read); false when the
// request has moved on: answered whole (the connection back in the pool or
// closed), retried, failed.
func (bc *loopBackend) process() bool {
	c := bc.owner
	fc := &c.fc
	r := c.l.r
	for !c.headDone {
		h := headIn(bc.rbuf[bc.roff:bc.rn])
		if h == nil {
			return true
		}
		p := &fc.p
		if err := parseResponse(h, p, fc.st.e.route.Sticky, r.cfg.StickyCookies); err != nil {
			c.attemptFailed(err, false)
			return false
		}
		bc.roff += len(h)
		if p.status < 200 {
			if p.status == 101 {
				c.attemptFailed(errors.New("backend switched protocols without an upgrade request"), false)
				return false
			}
			continue // 1xx informational: wait for the final answer
		}
		q := &fc.q
		fc.st.status = p.status
		noBody := bodyless(q.head1, p.status)
		untilClose := !noBody && !p.chunked && p.length < 0
		closeClient := q.close || untilClose
		c.keep = !closeClient
		c.backendKeep = !p.close && !untilClose
		fc.out = appendResponseHead(fc.out, h, p, q.head1, r.stickyCookie(&fc.st, p.setsSession, false), closeClient)
		c.headDone = true
		c.setDeadline(dlNone, time.Time{})
		c.body.start(noBody, p)
	}
	done, err := c.body.consume(bc, fc)
	switch {
	case err != nil:
		c.midBody(err)
		return false
	case done:
		bc.done()
		c.respDone = true
		c.drained()
		return false
	}
	return true
}

// done ends the connection's part in the request: back to the pool when
// the answer was read whole and nothing more came, closed otherwise.
func (bc *loopBackend) done() {
	c := bc.owner
	keep := c.backendKeep && bc.roff == bc.rn
	c.bc = nil
	if c.started {
		c.started = false
		c.fc.st.backend.Done()
	}
	if keep {
		bc.l.putIdle(bc)
		return
	}
	bc.owner = nil
	bc.l.forget(bc.fd)
	bc.release()
}

// midBody ends a request whose answer broke after its head went out:
// closing the client connection tells the client the body is incomplete.
func (c *loopConn) midBody(err error) {
	fc := &c.fc
	if !c.gone {
		c.l.r.log.Warn("backend failed mid-response", "app", fc.st.e.route.App, "backend", fc.st.backend.Addr,
			"request_id", string(fc.id), "err", err)
	}
	c.keep = false
	c.dropBackend()
	c.finish()
}

// bodyScan follows a response body's framing as its bytes go by.
type bodyScan struct {
	mode   uint8
	remain int64
	cs     uint8 // chunked: what comes next
	eof    bool  // bodyToEOF: the backend ended the connection
}

const (
	bodyNone uint8 = iota
	bodyLength
	bodyChunked
	bodyToEOF
)

const (
	csSize    uint8 = iota // a chunk-size line
	csData                 // remain bytes of chunk data
	csDataEnd              // the CRLF after the data
	csTrailer              // trailer lines up to an empty one
)

func (s *bodyScan) start(noBody bool, p *respHead) {
	*s = bodyScan{}
	switch {
	case noBody:
		s.mode = bodyNone
	case p.length >= 0:
		s.mode, s.remain = bodyLength, p.length
	case p.chunked:
		s.mode, s.cs = bodyChunked, csSize
	default:
		s.mode = bodyToEOF
	}
}

// consume moves the body bytes buffered in bc to fc.out (as framed, up to
// loopOutMax gathered); done once the body is whole.
func (s *bodyScan) consume(bc *loopBackend, fc *frontConn) (done bool, err error) {
	take := func(n int) {
		fc.out = append(fc.out, bc.rbuf[bc.roff:bc.roff+n]...)
		bc.roff += n
	}
	for {
		avail := bc.rbuf[bc.roff:bc.rn]
		room := loopOutMax - len(fc.out)
		switch {
		case s.mode == bodyNone:
			return true, nil
		case s.mode == bodyLength || (s.mode == bodyChunked && s.cs == csData):
			if s.remain == 0 {
				if s.mode == bodyLength {
					return true, nil
				}
				s.cs = csDataEnd
				continue
			}
			if len(avail) == 0 || room <= 0 {
				return false, nil
			}
			k := int(min(int64(len(avail)), s.remain, int64(room)))
			take(k)
			s.remain -= int64(k)
			fc.bytes += int64(k)
		case s.mode == bodyToEOF:
			if len(avail) == 0 {
				return s.eof, nil
			}
			if room <= 0 {
				return false, nil
			}
			k := min(len(avail), room)
			take(k)
			fc.bytes += int64(k)
		default: // a line of the chunked framing
			i := bytes.IndexByte(avail, '\n')
			if i < 0 {
				return false, nil
			}
			if i == 0 || avail[i-1] != '\r' {
				return false, errBadChunk
			}
			line := avail[:i-1]
			switch s.cs {
			case csSize:
				size, ok := parseChunkSize(line)
				if !ok {
					return false, errBadChunk
				}
				take(i + 1)
				if size == 0 {
					s.cs = csTrailer
				} else {
					s.cs, s.remain = csData, size
				}
			case csDataEnd:
				if len(line) != 0 {
					return false, errBadChunk
				}
				take(i + 1)
				s.cs = csSize
			case csTrailer:
				if len(line) == 0 {
					take(i + 1)
					return true, nil
				}
				if _, _, ok := headerLine(line); !ok {
					return false, errBadChunk
				}
				take(i + 1)
			}
		}
	}
}
