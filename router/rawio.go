package router

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// rawConn does a TCP connection's reads and writes with raw system calls
// through its syscall.RawConn: the descriptor is non-blocking and Go's
// poller still parks the goroutine when nothing is ready (and deadlines
// still apply), but the calls skip the runtime's blocking-syscall hand-off.
// On loopback and LAN a write carries the peer's receive work and takes
// long enough for the runtime to take the P away and wake another thread
// for it, twice per proxied request; that thread shuffle was a fifth of the
// router's CPU.
type rawConn struct {
	net.Conn
	rc syscall.RawConn

	// Arguments and results of the calls below (reads and writes may run
	// concurrently), so the callbacks are built once per connection and a
	// call allocates nothing.
	rp, wp     []byte
	rn, wn     int
	rerr, werr error
	readFn     func(fd uintptr) bool
	wrFn       func(fd uintptr) bool

	// writeTimeout bounds a write that has to wait for the peer to read
	// (0: none). The deadline is set only once a write would block, so a
	// write that goes straight into the socket buffer costs no timer.
	writeTimeout time.Duration
	wArmed       bool

	peekFn    func(fd uintptr)
	peekClean bool

	// A request written by the next Read inside its poll cycle (see
	// WriteThenRead).
	pending  []byte
	wreq     []byte // pending, while the Read that writes it runs
	qn       int    // bytes of wreq written
	sent     bool
	partial  bool
	sendErr  bool
	wrReadFn func(fd uintptr) bool
}

// newRawConn wraps a TCP connection; other connections (TLS) are returned
// as they are. A write that waits longer than writeTimeout for the peer to
// read fails (0: no limit).
func newRawConn(c net.Conn, writeTimeout time.Duration) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{Conn: c, rc: rc, writeTimeout: writeTimeout}
	r.readFn = r.read
	r.wrFn = r.write
	r.peekFn = r.peek
	r.wrReadFn = r.writeRead
	return r
}

// WriteThenRead makes the next Read first write req and then wait for the
// answer without trying a read that would find nothing (one system call
// less per request). The write happens after the poller was reset for the
// read, so an answer arriving at once is never missed. Only for a
// connection where nothing can be waiting to be read (see idleClean).
func (r *rawConn) WriteThenRead(req []byte) { r.pending = req }

func (r *rawConn) writeRead(fd uintptr) bool {
	if r.sent {
		return r.read(fd)
	}
	for r.qn < len(r.wreq) {
		p := r.wreq[r.qn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			r.qn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			r.partial = true // the socket buffer is full: finish with Write
			return true
		default:
			r.rerr, r.sendErr = e, true
			return true
		}
	}
	r.sent = true
	return false // the answer comes after the request: wait for it
}

// idleClean reports whether nothing (no byte, no end of stream, no error)
// has arrived on the connection, without waiting.
func (r *rawConn) idleClean() bool {
	r.peekClean = false
	if r.rc.Control(r.peekFn) != nil {
		return false
	}
	return r.peekClean
}

func (r *rawConn) peek(fd uintptr) {
	var b [1]byte
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	r.peekClean = e == syscall.EAGAIN
}

func (r *rawConn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		switch {
		case e == syscall.EAGAIN:
			return false // wait until readable
		case e == syscall.EINTR:
			continue
		case e != 0:
			r.rerr = e
		case n == 0:
			r.rerr = io.EOF
		default:
			r.rn = int(n)
		}
		return true
	}
}

func (r *rawConn) write(fd uintptr) bool {
	for r.wn < len(r.wp) {
		p := r.wp[r.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			r.wn += int(n)
		case syscall.EAGAIN:
			if r.writeTimeout > 0 && !r.wArmed {
				r.wArmed = true
				r.Conn.SetWriteDeadline(time.Now().Add(r.writeTimeout))
			}
			return false // wait until writable
		case syscall.EINTR:
		default:
			r.werr = e
			return true
		}
	}
	return true
}

func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerr = p, 0, nil
	r.partial, r.sendErr = false, false
	fn := r.readFn
	req := r.pending
	if req != nil {
		r.pending, r.wreq = nil, req
		r.qn, r.sent = 0, false
		fn = r.wrReadFn
	}
	err := r.rc.Read(fn)
	n := r.rn
	r.rp, r.wreq = nil, nil
	switch {
	case err != nil:
		if req != nil && !r.sent {
			// The poll failed before the request went out (a deadline
			// already past: a retry after a slow failed dial): the next
			// Read still owes it.
			r.pending = req[r.qn:]
		}
		return 0, r.opError("read", err)
	case r.partial:
		if _, err := r.Write(req[r.qn:]); err != nil {
			return 0, err
		}
		return r.Read(p)
	case r.sendErr:
		return 0, r.opError("write", os.NewSyscallError("write", r.rerr))
	case r.rerr == io.EOF:
		return 0, io.EOF
	case r.rerr != nil:
		return 0, r.opError("read", os.NewSyscallError("read", r.rerr))
	}
	return n, nil
}

func (r *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.werr = p, 0, nil
	err := r.rc.Write(r.wrFn)
	n := r.wn
	r.wp = nil
	if r.wArmed {
		r.wArmed = false
		r.Conn.SetWriteDeadline(time.Time{})
	}
	if err == nil && r.werr != nil {
		err = os.NewSyscallError("write", r.werr)
	}
	if err != nil {
		return n, r.opError("write", err)
	}
	return n, nil
}

// opError wraps err like net.Conn does, so callers see the same errors
// (timeouts, net.ErrClosed, ECONNRESET) as with the plain connection.
func (r *rawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}

// CloseWrite half-closes the connection (net/http's graceful close).
func (r *rawConn) CloseWrite() error { return r.Conn.(*net.TCPConn).CloseWrite() }
