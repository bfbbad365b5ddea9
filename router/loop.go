//go:build linux

package router

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The event loops serve the plain-HTTP listener's connections without a
// goroutine per connection: one loop per core owns an epoll instance and,
// edge-triggered, every descriptor it serves — client connections and its
// own keep-alive connections to backends — and moves each request through
// its states on readiness events. A proxied request then costs four system
// calls (read the head, write it to the backend, read the answer, write it
// to the client) and the loop's share of one epoll_wait, with no goroutine
// parked or woken: a goroutine per connection adds a read that finds
// nothing on each side and the scheduler's hand-offs.
//
// The loops serve what the goroutine front serves (bodiless HTTP/1.1 GET and
// HEAD) with the same parser, route table, balancing, retries, sticky
// sessions, headers, metrics and access log; any other request is handed,
// with its connection and the bytes already read, to the net/http server,
// as the front does. The front still accepts connections (and applies the
// per-address cap); it passes each one to a loop in turn.

// evLoops is the set of loops of one front.
type evLoops struct {
	f     *front
	loops []*evLoop
	next  atomic.Uint32
	open  atomic.Int64   // client connections the loops serve
	wg    sync.WaitGroup // loop goroutines
}

// evLoop is one event loop: its goroutine alone touches its fields, except
// inbox (under mu) and the wake descriptor.
type evLoop struct {
	ls     *evLoops
	f      *front
	r      *Router
	epfd   int
	wakefd int // eventfd: new connections, shutdown

	mu    sync.Mutex
	inbox []*loopConn // accepted, not yet registered; guarded by mu

	fds      []loopFD // by descriptor number
	idle     map[string][]*loopBackend
	nconns   int       // client connections open
	earliest time.Time // no deadline of the loop's connections is before this
	now      time.Time
	stopped  bool // guarded by mu
	events   [128]syscall.EpollEvent
}

// loopFD is a descriptor registered with a loop.
type loopFD interface {
	event(ev uint32)
}

const (
	evIn    = syscall.EPOLLIN
	evOut   = syscall.EPOLLOUT
	evRDHup = 0x2000 // EPOLLRDHUP
	evErr   = syscall.EPOLLERR | syscall.EPOLLHUP
	evET    = 1 << 31 // EPOLLET
)

// newEvLoops starts n loops for f; nil when the system refuses (the front
// then serves connections with goroutines).
func newEvLoops(f *front, n int) *evLoops {
	ls := &evLoops{f: f}
	for i := 0; i < n; i++ {
		l, err := newEvLoop(f, ls)
		if err != nil {
			f.r.log.Warn("event loop unavailable, serving with a goroutine per connection", "err", err)
			for _, l := range ls.loops {
				l.closeFDs()
			}
			return nil
		}
		ls.loops = append(ls.loops, l)
	}
	for _, l := range ls.loops {
		ls.wg.Go(l.run)
	}
	return ls
}

func newEvLoop(f *front, ls *evLoops) (*evLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("eventfd2", e)
	}
	l := &evLoop{ls: ls, f: f, r: f.r, epfd: epfd, wakefd: int(wfd), idle: map[string][]*loopBackend{}}
	if err := l.add(int(wfd), evIn|evET, wakeFD{l}); err != nil {
		l.closeFDs()
		return nil, err
	}
	return l, nil
}

func (l *evLoop) closeFDs() {
	syscall.Close(l.wakefd)
	syscall.Close(l.epfd)
}

// give passes an accepted connection to a loop; false when it could not
// be taken out of Go's poller (the caller serves it with a goroutine).
func (ls *evLoops) give(c net.Conn, release *releaseOnClose, client string, trusted bool) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	l := ls.loops[int(ls.next.Add(1))%len(ls.loops)]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	fd := -1
	if rc.Control(func(s uintptr) {
		r, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if e == 0 {
			fd = int(r)
		}
	}) != nil || fd < 0 {
		return false
	}
	c.Close() // the duplicate keeps the socket open, outside Go's poller
	lc := &loopConn{l: l, fd: fd, release: release, writable: true}
	lc.fc.f, lc.fc.ci, lc.fc.pending = ls.f, clientInfo{ip: client, trusted: trusted}, -1
	l.inbox = append(l.inbox, lc)
	l.wake()
	return true
}

// wake interrupts the loop's epoll_wait.
func (l *evLoop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	syscall.Write(l.wakefd, one[:])
}

// wakeAll wakes every loop (shutdown).
func (ls *evLoops) wakeAll() {
	for _, l := range ls.loops {
		l.wake()
	}
}

// connections returns the number of client connections the loops serve.
func (ls *evLoops) connections() int64 { return ls.open.Load() }

// wait waits for the loops to end (after the front's shutdown).
func (ls *evLoops) wait() { ls.wg.Wait() }

type wakeFD struct{ l *evLoop }

func (w wakeFD) event(uint32) {
	var b [8]byte
	syscall.Read(w.l.wakefd, b[:])
	w.l.takeInbox()
}

func (l *evLoop) takeInbox() {
	l.mu.Lock()
	in := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, c := range in {
		if err := l.add(c.fd, evIn|evOut|evRDHup|evET, c); err != nil {
			syscall.Close(c.fd)
			c.release.done()
			l.f.wg.Done()
			continue
		}
		l.nconns++
		l.ls.open.Add(1)
		c.rbuf = getLoopBuf(frontReadBuffer)
		c.idleSince(l.now)
	}
}

func (l *evLoop) add(fd int, events uint32, o loopFD) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	for fd >= len(l.fds) {
		l.fds = append(l.fds, make([]loopFD, len(l.fds)+64)...)
	}
	l.fds[fd] = o
	return nil
}

// forget closes fd and drops it from the loop (closing removes it from the
// epoll set).
func (l *evLoop) forget(fd int) {
	if fd >= 0 && fd < len(l.fds) {
		l.fds[fd] = nil
	}
	syscall.Close(fd)
}

// deadline notes that some connection has a deadline at t.
func (l *evLoop) deadline(t time.Time) {
	if l.earliest.IsZero() || t.Before(l.earliest) {
		l.earliest = t
	}
}

func (l *evLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l.now = l.r.now()
	for {
		timeout := -1
		if !l.earliest.IsZero() {
			d := l.earliest.Sub(l.r.now())
			timeout = max(int((d+time.Millisecond-1)/time.Millisecond), 0)
		}
		if l.f.closing.Load() {
			if timeout < 0 || timeout > 50 {
				timeout = 50 // look at idle connections again soon
			}
		}
		n, err := syscall.EpollWait(l.epfd, l.events[:], timeout)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			l.r.log.Error("epoll_wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		l.now = l.r.now()
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			if fd := int(ev.Fd); fd < len(l.fds) {
				if o := l.fds[fd]; o != nil {
					o.event(ev.Events)
				}
			}
		}
		if !l.earliest.IsZero() && !l.now.Before(l.earliest) {
			l.expire()
		}
		if l.f.closing.Load() && l.shutdown() {
			return
		}
	}
}

// expire ends what is past its deadline and finds the next one.
func (l *evLoop) expire() {
	l.earliest = time.Time{}
	for _, o := range l.fds {
		switch o := o.(type) {
		case *loopConn:
			o.checkDeadline()
		case *loopBackend:
			o.checkIdle()
		}
	}
}

// shutdown closes idle connections (all of them once forced); true when
// the loop has none left and has ended.
func (l *evLoop) shutdown() bool {
	force := l.f.forced.Load()
	for _, o := range l.fds {
		if c, ok := o.(*loopConn); ok && (force || c.idle()) {
			c.close()
		}
	}
	l.mu.Lock()
	if l.nconns > 0 || len(l.inbox) > 0 {
		l.mu.Unlock()
		return false
	}
	l.stopped = true // give passes no more connections
	l.mu.Unlock()
	for addr, list := range l.idle {
		for _, bc := range list {
			l.forget(bc.fd)
		}
		delete(l.idle, addr)
	}
	l.closeFDs()
	return true
}

// Buffers of the loops' connections (client heads, backend answers).
var loopBufs = [2]sync.Pool{}

func getLoopBuf(size int) []byte {
	i := 0
	if size > frontReadBuffer {
		i = 1
	}
	if v := loopBufs[i].Get(); v != nil {
		return (*v.(*[]byte))[:size]
	}
	return make([]byte, size)
}

func putLoopBuf(b []byte) {
	if cap(b) != frontReadBuffer && cap(b) != frontOutBuffer {
		return
	}
	i := 0
	if cap(b) > frontReadBuffer {
		i = 1
	}
	b = b[:cap(b)]
	loopBufs[i].Put(&b)
}

// sysRead and sysWrite are read(2) and write(2) on a non-blocking
// descriptor, without the runtime's blocking-syscall hand-off.
func sysRead(fd int, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}

func sysWrite(fd int, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}
