package router

import (
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// The access log is written asynchronously: a request encodes its line into
// its own scratch buffer and appends it, under a short lock, to a bounded
// queue of bytes; one goroutine writes the queue out in batches (whole lines,
// at most accessLogWrite bytes a write, accessLogFileWrite to a regular
// file, after at most accessLogDelay). A request never waits for the
// output: when the queue is full (the output is slower than the traffic, or
// stuck) the line is dropped and counted in
// dinp_router_access_log_dropped_total. Close flushes what is queued.
//
// Lines keep the shape the slog JSON handler gave them (time, level, msg
// "request", component "router", then the request's fields), so whatever
// reads the router's log reads them alike.

const (
	// accessLogQueue bounds the bytes waiting to be written (~4,000 lines).
	accessLogQueue = 1 << 20
	// accessLogWrite is the largest single write: whole lines, at most
	// PIPE_BUF bytes, so a line never interleaves with another writer's on a
	// pipe or socket (journald).
	accessLogWrite = 4096
	// accessLogFileWrite is the largest write to a regular file, where a
	// write is never split among other writers' (O_APPEND, or one file
	// offset): ~250 lines a write and a wake-up, not ~16.
	accessLogFileWrite = 64 << 10
	// accessLogDelay bounds how long a line waits for a batch to fill.
	accessLogDelay = 10 * time.Millisecond
	// accessLogCloseWait bounds Close's wait for a stuck output.
	accessLogCloseWait = 5 * time.Second
)

type accessLog struct {
	out     io.Writer
	max     int
	chunk   int // largest write, and the batch a write waits for
	dropped prometheus.Counter

	mu      sync.Mutex
	queue   []byte        // guarded by mu
	closing bool          // guarded by mu
	first   chan struct{} // a line came into an empty queue
	wake    chan struct{} // a batch is ready, or Close
	done    chan struct{}
	once    sync.Once
}

func newAccessLog(out io.Writer, max int, dropped prometheus.Counter) *accessLog {
	a := &accessLog{out: out, max: max, chunk: accessLogWrite, dropped: dropped, first: make(chan struct{}, 1), wake: make(chan struct{}, 1), done: make(chan struct{}),
		queue: make([]byte, 0, 64<<10)}
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			a.chunk = min(accessLogFileWrite, max)
		}
	}
	go a.run()
	return a
}

// add queues one encoded line (ending in '\n'); it never blocks on the
// output. It reports whether the line was kept.
func (a *accessLog) add(line []byte) bool {
	a.mu.Lock()
	if a.closing || len(a.queue)+len(line) > a.max {
		a.mu.Unlock()
		a.dropped.Inc()
		return false
	}
	before := len(a.queue)
	a.queue = append(a.queue, line...)
	a.mu.Unlock()
	switch {
	case before == 0: // the writer starts gathering a batch
		signal(a.first)
	case before < a.chunk && before+len(line) >= a.chunk: // a batch is ready
		signal(a.wake)
	}
	return true
}

// run writes the queue out until Close, then what is left. It gathers a
// batch first — a.chunk bytes, or what came within accessLogDelay — so that
// a busy router makes one write per ~16 lines (~250 to a file) instead of a
// wake-up and a write per line.
func (a *accessLog) run() {
	defer close(a.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	spare := make([]byte, 0, 64<<10)
	for {
		select {
		case <-a.first:
		case <-a.wake:
		}
		a.mu.Lock()
		ready := len(a.queue) >= a.chunk || a.closing
		a.mu.Unlock()
		if !ready {
			timer.Reset(accessLogDelay)
			select {
			case <-a.wake:
			case <-timer.C:
			}
			timer.Stop()
		}
		for {
			a.mu.Lock()
			batch, closing := a.queue, a.closing
			if len(batch) == 0 {
				a.mu.Unlock()
				if closing {
					return
				}
				break
			}
			a.queue = spare[:0] // swap buffers: requests fill one while the other is written
			a.mu.Unlock()
			a.write(batch)
			spare = batch
			if cap(spare) > 4*accessLogQueue { // do not keep a huge one around
				spare = make([]byte, 0, 64<<10)
			}
		}
	}
}

// write sends b (whole lines) in writes of at most a.chunk bytes cut
// at line ends. A failed write loses those lines (counted as dropped).
func (a *accessLog) write(b []byte) {
	for len(b) > 0 {
		n := len(b)
		if n > a.chunk {
			n = lastLineEnd(b[:a.chunk])
			if n == 0 { // one line longer than a write
				n = firstLineEnd(b)
			}
		}
		if _, err := a.out.Write(b[:n]); err != nil {
			a.dropped.Add(float64(countLines(b[:n])))
		}
		b = b[n:]
	}
}

// Close stops taking lines and waits (at most accessLogCloseWait) until the
// queue is written.
func (a *accessLog) Close() {
	a.once.Do(func() {
		a.mu.Lock()
		a.closing = true
		a.mu.Unlock()
		signal(a.wake)
	})
	select {
	case <-a.done:
	case <-time.After(accessLogCloseWait):
	}
}

// signal sends on a buffered(1) channel unless a signal is pending.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func lastLineEnd(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			return i + 1
		}
	}
	return 0
}

func firstLineEnd(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i + 1
		}
	}
	return len(b)
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

// appendAccessLine encodes one request's line (both proxy paths).
func appendAccessLine[S ~string | ~[]byte](b []byte, t time.Time, host S, app string, method S, path S,
	status int, bytes int64, d time.Duration, backend string, id S) []byte {
	b = append(b, `{"time":"`...)
	b = appendStamp(b, t)
	b = append(b, `","level":"INFO","msg":"request","component":"router","host":`...)
	b = appendJSONString(b, host)
	b = append(b, `,"app":`...)
	b = appendJSONString(b, app)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, d.Microseconds())
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, backend)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, id)
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// stamp caches the formatted second of the last line: a line then formats
// only its milliseconds (formatting the whole time was a third of a line's
// cost).
var stamp atomic.Pointer[stampCache]

type stampCache struct {
	sec        int64
	loc        *time.Location
	head, zone []byte // "2006-01-02T15:04:05." and "Z07:00" of that second
}

// appendStamp appends t as "2006-01-02T15:04:05.000Z07:00".
func appendStamp(b []byte, t time.Time) []byte {
	c := stamp.Load()
	if c == nil || c.sec != t.Unix() || c.loc != t.Location() {
		c = &stampCache{sec: t.Unix(), loc: t.Location(),
			head: t.AppendFormat(nil, "2006-01-02T15:04:05."), zone: t.AppendFormat(nil, "Z07:00")}
		stamp.Store(c)
	}
	b = append(b, c.head...)
	ms := t.Nanosecond() / 1e6
	b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, c.zone...)
}

// appendMillis appends us/1000 as strconv.AppendFloat(float64(us)/1000, 'f',
// -1) does (the shortest form: a decimal with up to 3 digits after the
// point is exactly what that float rounds back to).
func appendMillis(b []byte, us int64) []byte {
	if us < 0 || us >= 1e15 {
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// jsonPlain marks the bytes a JSON string carries as they are.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string like encoding/json: quotes,
// backslashes, control characters, U+2028/U+2029 escaped; invalid UTF-8
// becomes U+FFFD.
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && jsonPlain[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		if str, ok := any(s).(string); ok {
			r, size = utf8.DecodeRuneInString(str[i:])
		} else {
			r, size = utf8.DecodeRune([]byte(s[i:]))
		}
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
