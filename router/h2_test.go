package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// h2Client speaks HTTP/2 (ALPN h2) to the router's TLS listener whatever
// the URL's host, counting the connections it opens.
func h2Client(r *Router, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // self-signed test certificate
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", r.TLSAddr())
		},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func h2Router(t *testing.T, edit func(*Config), routes map[string]common.Route) *Router {
	t.Helper()
	cert := selfSigned(t, t.TempDir(), "wild", "*.apps.io")
	r, _ := routerWith(t, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSCerts = []TLSCert{cert}
		if edit != nil {
			edit(c)
		}
	}, routes)
	return r
}

func h2Get(t *testing.T, c *http.Client, host, path string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("GET %s%s answered over %s, want HTTP/2", host, path, resp.Proto)
	}
	return resp, string(body)
}

// HTTP/2 requests are routed by :authority with the forwarding headers,
// metrics and access log of HTTP/1.1; router-made answers too.
func TestH2RoutingHeadersMetricsLog(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	sink := &lineSink{}
	r := h2Router(t, func(c *Config) { c.AccessLog = true; c.AccessLogOutput = sink },
		map[string]common.Route{"a.apps.io": route("h2a", 0, be(a.addr(), "ia", true)), "b.apps.io": route("h2b", 0, be(b.addr(), "ib", true))})
	c := h2Client(r, nil)

	for host, want := range map[string]string{"a.apps.io": "a ", "b.apps.io": "b "} {
		resp, body := h2Get(t, c, host, "/p?q=1")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("%s: %d %q", host, resp.StatusCode, body)
		}
	}
	got := a.last.Load()
	if got.Host != "a.apps.io" || got.URL.RequestURI() != "/p?q=1" || got.Proto != "HTTP/1.1" {
		t.Errorf("backend got host %q uri %q proto %s", got.Host, got.URL.RequestURI(), got.Proto)
	}
	for k, want := range map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1",
		"X-Forwarded-Host": "a.apps.io", "X-Real-Ip": "127.0.0.1"} {
		if v := got.Header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if len(got.Header.Get("X-Request-Id")) != 32 || got.Header.Get("X-Request-Start") == "" {
		t.Errorf("request id / start missing: %v", got.Header)
	}

	resp, _ := h2Get(t, c, "nope.apps.io", "/")
	if resp.StatusCode != 404 || resp.Header.Get(HeaderRouterError) != ErrUnknownRoute {
		t.Errorf("unknown host over h2: %d %q", resp.StatusCode, resp.Header.Get(HeaderRouterError))
	}

	e, _ := r.table.Lookup("a.apps.io")
	if n := counterValue(r.metrics.requests.WithLabelValues(e.route.App, "2xx")); n != 1 {
		t.Errorf("requests_total{app=h2a,2xx} = %v, want 1", n)
	}
	testenv.WaitFor(t, "access log lines", 5*time.Second, func() bool { return sink.count() >= 3 })
	var sawA bool
	for _, l := range sink.lines(t) {
		if l["host"] == "a.apps.io" && l["app"] == "h2a" && l["path"] == "/p" && l["status"] == float64(200) &&
			l["request_id"] == got.Header.Get("X-Request-Id") {
			sawA = true
		}
	}
	if !sawA {
		t.Errorf("no access log line for the h2 request: %v", sink.lines(t))
	}
}

// A streamed answer reaches an HTTP/2 client as it is written.
func TestH2StreamedResponse(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	r := h2Router(t, nil, map[string]common.Route{"s.apps.io": route("s", 0, be(s.Listener.Addr().String(), "is", true))})
	resp, err := h2Client(r, nil).Get("https://s.apps.io/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("proto %s", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first chunk %q %v (not streamed before the response finished)", line, err)
	}
	close(release)
	if line, _ := br.ReadString('\n'); line != "second\n" {
		t.Fatalf("second chunk %q", line)
	}
}

// Many requests at once share one HTTP/2 connection, all in flight at the
// backend together.
func TestH2ConcurrentStreamsOneConnection(t *testing.T) {
	a := newBlocking(t, "a")
	r := h2Router(t, nil, map[string]common.Route{"c.apps.io": route("c", 0, be(a.addr(), "ia", true))})
	var dials atomic.Int64
	c := h2Client(r, &dials)
	h2Get(t, c, "c.apps.io", "/warm") // one connection up before the burst
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := c.Get(fmt.Sprintf("https://c.apps.io/slow?i=%d", i))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("%d over %s", resp.StatusCode, resp.Proto)
			}
		})
	}
	testenv.WaitFor(t, "all streams at the backend", 10*time.Second, func() bool { return a.inFlight.Load() == n })
	close(a.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("%d connections for %d concurrent requests, want 1", d, n)
	}
}

// Over HTTP/2: a refused backend is retried on another, and a sticky app
// pins its client with a Secure cookie.
func TestH2RetriesAndSticky(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "x"})
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	retry := route("rt", 0, common.Backend{Addr: refusingAddr, Instance: "dead", Healthy: true, Release: 1},
		be(s.Listener.Addr().String(), "live", true))
	sticky := route("stk", 0, be(s.Listener.Addr().String(), "live", true))
	sticky.Sticky = true
	r := h2Router(t, func(c *Config) { c.FailMark = 0 },
		map[string]common.Route{"rt.apps.io": retry, "stk.apps.io": sticky})
	c := h2Client(r, nil)
	for i := range 6 {
		if resp, body := h2Get(t, c, "rt.apps.io", "/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	e, _ := r.table.Lookup("rt.apps.io")
	if n := counterValue(r.metrics.retries.WithLabelValues(e.route.App)); n < 1 {
		t.Errorf("retries_total = %v: the refusing backend was never tried first in 6 round-robin picks", n)
	}
	resp, _ := h2Get(t, c, "stk.apps.io", "/login")
	var pin *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == StickyCookie {
			pin = ck
		}
	}
	if pin == nil || pin.Value != "live" || !pin.Secure {
		t.Fatalf("sticky cookie over h2: %+v (all: %v)", pin, resp.Header["Set-Cookie"])
	}
}

// The TLS listener offers h2 and http/1.1; a client asking for http/1.1
// (as WebSocket clients do) still upgrades.
func TestTLSWebSocketOverHTTP1(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}))
	t.Cleanup(s.Close)
	r := h2Router(t, nil, map[string]common.Route{"ws.apps.io": route("ws", 0, be(s.Listener.Addr().String(), "iw", true))})

	c, err := tls.Dial("tcp", r.TLSAddr(), &tls.Config{InsecureSkipVerify: true, ServerName: "ws.apps.io", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN %q", p)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: ws.apps.io\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprint(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Fatalf("echo %q %v", line, err)
	}

	// Offered both, a client gets h2.
	c2, err := tls.Dial("tcp", r.TLSAddr(), &tls.Config{InsecureSkipVerify: true, ServerName: "ws.apps.io", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if p := c2.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN with h2 offered: %q", p)
	}
}
