package hm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dinp/dinp/common"
)

// maxBody bounds how much of a response is read (and searched for
// HealthConfig.Body); a longer body is not drained and its connection is
// not reused.
const maxBody = 64 << 10

// target is what to probe for one instance.
type target struct {
	App  string
	Addr string
	Host string // Host header: the app's route host
	HC   common.HealthConfig
}

// keepConn is an instance's kept-alive probe connection. Probes of one
// instance never overlap (the instance's lock), so it needs no lock of its
// own, and an idle connection costs a socket and nothing else: no reader
// goroutine, no buffers (net/http's Transport keeps two goroutines and 8 KiB
// per idle connection, which at 10,000 instances is most of hm's memory and
// much of its CPU).
type keepConn struct {
	c    net.Conn
	addr string
}

func (k *keepConn) close() {
	if k.c != nil {
		k.c.Close()
		k.c, k.addr = nil, ""
	}
}

// prober runs health checks.
type prober struct {
	userAgent string // names the hm, so an app's logs show which one probed
	readers   sync.Pool
}

func newProber(id string) *prober {
	return &prober{
		userAgent: "dinp-hm/1 (" + id + ")",
		readers:   sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }},
	}
}

// probe checks t once within its timeout: an HTTP GET when a path is set
// (over kc, kept alive between probes), a TCP connect otherwise.
func (p *prober) probe(ctx context.Context, t target, kc *keepConn) error {
	hc := t.HC
	// The timeout is a deadline on the dial and the socket; ctx only
	// interrupts (hm stops probing the instance). No context per probe: at
	// 10,000 probes a second its timer and goroutine hand-off are measurable.
	deadline := time.Now().Add(time.Duration(hc.TimeoutMS) * time.Millisecond)
	dialer := net.Dialer{Deadline: deadline}
	if hc.Path == "" {
		c, err := dialer.DialContext(ctx, "tcp", t.Addr)
		if err != nil {
			return fmt.Errorf("connect: %s", short(err, hc))
		}
		c.Close()
		return nil
	}
	path := hc.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if strings.ContainsAny(path, " \t\r\n") { // would break (or inject into) the request
		return fmt.Errorf("bad health path %q", path)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + t.Host + "\r\nUser-Agent: " + p.userAgent + "\r\nAccept: */*\r\n\r\n"
	if kc.addr != t.Addr {
		kc.close()
	}
	for attempt := 0; ; attempt++ {
		reused := kc.c != nil
		if !reused {
			c, err := dialer.DialContext(ctx, "tcp", t.Addr)
			if err != nil {
				return fmt.Errorf("get %s: %s", path, short(err, hc))
			}
			kc.c, kc.addr = c, t.Addr
		}
		status, body, keep, err := p.roundTrip(ctx, kc.c, deadline, req, hc.Body != "")
		if err != nil {
			kc.close()
			// A kept connection the app closed while idle fails at once:
			// try a fresh one, as browsers and net/http do.
			if reused && attempt == 0 && ctx.Err() == nil && !common.IsTimeout(err) && time.Now().Before(deadline) {
				continue
			}
			return fmt.Errorf("get %s: %s", path, short(err, hc))
		}
		if !keep {
			kc.close()
		}
		if status < hc.StatusMin || status > hc.StatusMax {
			return fmt.Errorf("get %s: status %d not in [%d, %d]", path, status, hc.StatusMin, hc.StatusMax)
		}
		if hc.Body != "" && !bytes.Contains(body, []byte(hc.Body)) {
			return fmt.Errorf("get %s: body lacks %q", path, hc.Body)
		}
		return nil
	}
}

// roundTrip sends req on c and reads the answer, bounded by deadline and
// interrupted by ctx. keep reports whether c can carry the next probe.
func (p *prober) roundTrip(ctx context.Context, c net.Conn, deadline time.Time, req string, wantBody bool) (status int, body []byte, keep bool, err error) {
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, req); err != nil {
		return 0, nil, false, err
	}
	br := p.readers.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() { br.Reset(nil); p.readers.Put(br) }()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, nil, false, err
	}
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, maxBody+1)
	var n int64
	if wantBody {
		body, err = io.ReadAll(lr)
		n = int64(len(body))
	} else {
		n, err = io.Copy(io.Discard, lr)
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("read body: %w", err)
	}
	keep = n <= maxBody && !resp.Close && br.Buffered() == 0
	return resp.StatusCode, body, keep, nil
}

// short names a transport error the way an operator reads it in the
// dashboard ("timeout after 1s", "connection refused") instead of Go's
// nested "dial tcp …: connect: …".
func short(err error, hc common.HealthConfig) string {
	switch {
	case common.IsTimeout(err):
		return fmt.Sprintf("timeout after %s", time.Duration(hc.TimeoutMS)*time.Millisecond)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before an answer"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err.Error()
	}
	return err.Error()
}
