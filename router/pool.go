package router

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"
)

// backendConn is one keep-alive connection to a backend, owned by one
// request at a time.
type backendConn struct {
	net.Conn
	addr string
	br   *bufio.Reader
	used time.Time // last returned to the pool
	// rdl is the read deadline last set by the request owning bc (the
	// client watcher's cancel only ever precedes closing bc).
	rdl time.Time
}

// connPool holds idle connections per backend address.
type connPool struct {
	dialer      net.Dialer
	localDialer net.Dialer // node-local addresses (Config.LocalDialTimeout)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*backendConn // guarded by mu
	closed bool                      // guarded by mu
}

func newConnPool(cfg Config) *connPool {
	return &connPool{
		dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		localDialer: net.Dialer{Timeout: cfg.LocalDialTimeout, KeepAlive: 30 * time.Second},
		maxIdle:     256,
		idleTimeout: 90 * time.Second,
		idle:        map[string][]*backendConn{},
	}
}

// get returns an idle connection to addr (reused=true) or dials one (with
// the node-local timeout when local).
func (p *connPool) get(ctx context.Context, addr string, local bool, now time.Time) (*backendConn, bool, error) {
	p.mu.Lock()
	for list := p.idle[addr]; len(list) > 0; list = p.idle[addr] {
		bc := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		if now.Sub(bc.used) >= p.idleTimeout {
			bc.Close()
			continue
		}
		p.mu.Unlock()
		// Nothing may have arrived while it was idle: bytes nobody asked for
		// (a HEAD answered with a body, a broken app) would be read as the
		// next answer, and an end of stream means the app closed it.
		if rc, ok := bc.Conn.(*rawConn); ok && !rc.idleClean() {
			bc.Close()
			p.mu.Lock()
			continue
		}
		return bc, true, nil
	}
	p.mu.Unlock()
	d := &p.dialer
	if local {
		d = &p.localDialer
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	rc := newRawConn(c, 0) // requests are small; the response timeout guards the wait
	return &backendConn{Conn: rc, addr: addr, br: bufio.NewReaderSize(rc, 4096)}, false, nil
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

// bufPool holds the body copy buffers of the ReverseProxy path.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type proxyBufferPool struct{}

func (proxyBufferPool) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (proxyBufferPool) Put(b []byte) { bufPool.Put(&b) }
