package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The front serves the router's app listeners (plain and TLS) with its own
// HTTP/1.1 loop: one goroutine per client connection reads a request head
// straight from its buffer, writes the outbound head to a pooled keep-alive
// backend connection, and copies the answer back, allocating nothing on the
// way. That is what nearly all of a web app's traffic is — GET and HEAD
// without a body — and doing it without net/http's per-request objects,
// background reader and handler hand-offs halves the router's CPU per
// request.
//
// Anything else — other methods, request bodies, upgrades (WebSocket),
// HTTP/1.0, expectations, heads too large for the buffer, anything malformed,
// keepalived's checks — is handed over, with the bytes already read, to a
// net/http server running the Router's ServeHTTP (ReverseProxy). The
// connection stays there for the rest of its life. Both paths share the
// route table, balancing, retries, metrics and logs.

const (
	frontReadBuffer = 4 << 10  // client read buffer: heads larger than this go to net/http
	frontOutBuffer  = 16 << 10 // response bytes gathered before a write
	frontIdle       = 90 * time.Second
	frontHeader     = 10 * time.Second // to read a head once it has started, and the TLS handshake
	maxResponseHead = 1 << 20
	// watchAfter is how long (at most; at least half of it) a request may
	// wait for its backend before the front starts watching the client
	// connection, so a client that leaves frees the backend connection and
	// is never retried for.
	watchAfter = 200 * time.Millisecond
)

// Client connection states, for shutdown.
const (
	connActive int32 = iota
	connIdle
	connClosed
)

var (
	errClientGone = errors.New("client went away")
	errClosing    = errors.New("router shutting down")
	aLongTimeAgo  = time.Unix(1, 0)
)

type front struct {
	r       *Router
	ln      net.Listener
	tlsCfg  *tls.Config // nil for plain HTTP
	handoff *handoffListener

	closing atomic.Bool
	forced  atomic.Bool // shutdown ran out of time: close every connection
	loops   *evLoops    // nil: a goroutine per connection
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[*frontConn]struct{} // guarded by mu
	limits  *connLimiter            // open connections per client address
}

func newFront(r *Router, ln net.Listener, tlsCfg *tls.Config) *front {
	return &front{
		r: r, ln: ln, tlsCfg: tlsCfg,
		handoff: &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})},
		conns:   map[*frontConn]struct{}{},
		limits:  newConnLimiter(r.cfg.MaxConnsPerAddr),
	}
}

// startLoops starts the event loops of a plain-HTTP front (Config.Loops).
func (f *front) startLoops() {
	n := f.r.cfg.Loops
	if f.tlsCfg != nil || n == 0 || f.r.cfg.handOffAll {
		return
	}
	if n < 0 {
		n = runtime.NumCPU()
	}
	f.loops = newEvLoops(f, n)
}

// serve accepts connections until the listener is closed; other accept
// errors (out of file descriptors…) are waited out.
func (f *front) serve() {
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.r.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		// A trusted proxy (a TLS terminator) carries many clients: no cap.
		ip := clientIP(c)
		capped := !f.r.cfg.trustedPeer(ip)
		if capped && !f.limits.acquire(ip) {
			f.r.tooManyConns(c)
			continue
		}
		var release *releaseOnClose
		if capped {
			release = &releaseOnClose{release: func() { f.limits.release(ip) }}
		}
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			release.done()
			continue
		}
		f.wg.Add(1)
		f.mu.Unlock()
		if f.loops != nil && f.loops.give(c, release, ip, !capped) {
			continue
		}
		fc := f.newConn(c)
		fc.release = release
		f.mu.Lock()
		f.conns[fc] = struct{}{} // a shutdown that began meanwhile: serve sees closing
		f.mu.Unlock()
		go fc.serve()
	}
}

// shutdown stops accepting, closes idle connections and waits for the
// requests in flight (each connection closes after its current response).
func (f *front) shutdown(ctx context.Context) error {
	f.closing.Store(true)
	f.ln.Close()
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		if f.loops != nil {
			f.loops.wakeAll()
			f.loops.wait()
		}
		close(done)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		f.closeConns(false)
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			f.closeConns(true)
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// closeConns closes idle connections (all of them with force).
func (f *front) closeConns(force bool) {
	if f.loops != nil {
		if force {
			f.forced.Store(true)
		}
		f.loops.wakeAll()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for fc := range f.conns {
		if fc.state.CompareAndSwap(connIdle, connClosed) || force {
			fc.c.Close()
		}
	}
}

var readerPool sync.Pool // *bufio.Reader of frontReadBuffer bytes

// outPool holds the per-request buffers of the front (outbound request head,
// response bytes).
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, frontOutBuffer); return &b }}

func (f *front) newConn(c net.Conn) *frontConn {
	fc := &frontConn{f: f, c: c, pending: -1, now: f.r.now()}
	fc.ci = f.r.newClientInfo(c.RemoteAddr().String(), f.tlsCfg != nil)
	fc.c = newRawConn(c, f.r.cfg.ClientWriteTimeout)
	if f.tlsCfg != nil {
		fc.c = tls.Server(fc.c, f.tlsCfg)
	}
	if v := readerPool.Get(); v != nil {
		fc.br = v.(*bufio.Reader)
		fc.br.Reset(fc)
	} else {
		fc.br = bufio.NewReaderSize(fc, frontReadBuffer)
	}
	return fc
}

// frontConn is one client connection served by the front.
type frontConn struct {
	f       *front
	release *releaseOnClose // uncounts the connection in f.limits
	c       net.Conn        // *tls.Conn on the TLS listener
	ci      clientInfo
	br      *bufio.Reader // reads through fc.Read
	state   atomic.Int32
	now     time.Time // last clock reading

	rdlIdle  bool // the idle read deadline is set on c
	rdlSetAt time.Time

	pending int // a byte the watcher read, or -1; read before c

	// Client watch, while waiting for a slow backend.
	watching  bool
	watchStop atomic.Bool
	watchDone chan struct{}
	watchByte [1]byte
	watchGot  bool
	gone      atomic.Bool
	watchBC   atomic.Pointer[backendConn]
	softArmed bool // a watchAfter read deadline is set on the backend connection

	q     reqHead
	p     respHead
	st    reqState
	id    []byte // the request id
	idBuf [32]byte
	out   []byte // bytes on their way to the client
	werr  bool   // a write to the client failed
	bytes int64  // body bytes sent to the client
	line  []byte // access log scratch
}

// Read feeds br: first a byte the watcher took, then the connection.
func (fc *frontConn) Read(p []byte) (int, error) {
	if fc.pending >= 0 && len(p) > 0 {
		p[0] = byte(fc.pending)
		fc.pending = -1
		return 1, nil
	}
	return fc.c.Read(p)
}

func (fc *frontConn) serve() {
	handedOff := false
	defer func() {
		f := fc.f
		f.mu.Lock()
		delete(f.conns, fc)
		f.mu.Unlock()
		if !handedOff {
			fc.c.Close()
			fc.release.done()
		}
		fc.br.Reset(nil)
		readerPool.Put(fc.br)
		f.wg.Done()
	}()
	if fc.ci.tls {
		tc := fc.c.(*tls.Conn)
		tc.SetDeadline(fc.now.Add(frontHeader))
		if err := tc.Handshake(); err != nil {
			fc.f.r.log.Debug("TLS handshake failed", "client", fc.ci.ip, "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			// HTTP/2: net/http's server takes the connection (see New).
			handedOff = fc.f.handoff.give(tc)
			return
		}
	}
	if fc.f.r.cfg.handOffAll {
		handedOff = fc.handOff()
		return
	}
	for {
		head, err := fc.nextHead()
		if err != nil {
			if errors.Is(err, errHeadTooBig) {
				handedOff = fc.handOff()
			}
			return
		}
		switch parseRequest(head, &fc.q) {
		case handOver:
			handedOff = fc.handOff()
			return
		case badFraming:
			fc.c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
				"400 Bad Request: both Content-Length and Transfer-Encoding\n"))
			return
		}
		keep := fc.handle(&fc.q)
		fc.br.Discard(len(head))
		if !keep || fc.f.closing.Load() {
			return
		}
	}
}

// nextHead waits for the next request head (idle deadline, then the header
// deadline once it has started) and returns it unconsumed.
func (fc *frontConn) nextHead() ([]byte, error) {
	if fc.br.Buffered() == 0 {
		if !fc.rdlIdle || fc.now.Sub(fc.rdlSetAt) > time.Second {
			fc.c.SetReadDeadline(fc.now.Add(frontIdle))
			fc.rdlIdle, fc.rdlSetAt = true, fc.now
		}
		fc.state.Store(connIdle)
		if fc.f.closing.Load() {
			return nil, errClosing
		}
		if _, err := fc.br.Peek(1); err != nil {
			return nil, err
		}
		if !fc.state.CompareAndSwap(connIdle, connActive) {
			return nil, errClosing
		}
	}
	buf, _ := fc.br.Peek(fc.br.Buffered())
	if h := headIn(buf); h != nil {
		return h, nil
	}
	// The head came in pieces: it must complete within frontHeader.
	fc.c.SetReadDeadline(time.Now().Add(frontHeader))
	fc.rdlIdle = false
	return peekHead(fc.br)
}

// handOff gives the connection, with what was read of it, to net/http.
func (fc *frontConn) handOff() bool {
	pre, _ := fc.br.Peek(fc.br.Buffered())
	pc := &prefixConn{Conn: fc.c, pre: append([]byte(nil), pre...), release: fc.release}
	if fc.pending >= 0 {
		pc.pre = append(pc.pre, byte(fc.pending))
	}
	fc.c.SetReadDeadline(time.Time{})
	return fc.f.handoff.give(pc)
}

// handoffListener is the net.Listener of the net/http server that takes
// connections over from the front.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give passes c to the server; false when it has stopped.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefixConn replays bytes the front already read before reading on.
type prefixConn struct {
	net.Conn
	pre     []byte
	release *releaseOnClose // uncounts the client connection (connLimiter)
}

// Close closes the connection and uncounts it.
func (c *prefixConn) Close() error {
	err := c.Conn.Close()
	c.release.done()
	return err
}

// CloseWrite lets net/http half-close the connection when it ends it.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type tlsStateKey struct{}

// connContext lets ServeHTTP see the TLS state of connections handed over
// from the TLS front (net/http sees them as plain connections).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*prefixConn); ok {
		if tc, ok := pc.Conn.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			return context.WithValue(ctx, tlsStateKey{}, &cs)
		}
	}
	return ctx
}

// startWatch reads the client connection in the background while a request
// waits on bc: if the client closes, bc's deadline ends the wait. A byte
// read (a pipelined request) is kept for br.
func (fc *frontConn) startWatch(bc *backendConn) {
	fc.watching = true
	fc.watchBC.Store(bc)
	done := make(chan struct{})
	fc.watchDone = done
	go func() {
		defer close(done)
		n, _ := fc.c.Read(fc.watchByte[:])
		if n > 0 {
			fc.watchGot = true
			return
		}
		if fc.watchStop.Load() {
			return
		}
		fc.gone.Store(true)
		if b := fc.watchBC.Load(); b != nil {
			b.SetDeadline(aLongTimeAgo)
		}
	}()
}

// stopWatch ends the client watch, if any, and waits for it.
func (fc *frontConn) stopWatch() {
	if !fc.watching {
		return
	}
	fc.watchStop.Store(true)
	fc.c.SetReadDeadline(aLongTimeAgo)
	<-fc.watchDone
	fc.watchStop.Store(false)
	fc.watchBC.Store(nil)
	fc.watching = false
	fc.rdlIdle = false // the client deadline must be set again
	if fc.watchGot {
		fc.pending = int(fc.watchByte[0])
		fc.watchGot = false
	}
}

// clientIP is the address part of c's peer.
func clientIP(c net.Conn) string {
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		return host
	}
	return c.RemoteAddr().String()
}
