package router

import (
	"io"
	"net"
	"os"
	"syscall"
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
}

// newRawConn wraps a TCP connection; other connections (TLS) are returned
// as they are.
func newRawConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{Conn: c, rc: rc}
	r.readFn = r.read
	r.wrFn = r.write
	return r
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
	err := r.rc.Read(r.readFn)
	n := r.rn
	r.rp = nil
	switch {
	case err != nil:
		return 0, r.opError("read", err)
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
