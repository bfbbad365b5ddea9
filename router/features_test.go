package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// routerWith starts a router on a fresh Redis prefix after writing routes.
func routerWith(t *testing.T, edit func(*Config), routes map[string]common.Route) (*Router, func(host string, rt common.Route)) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	for h, rt := range routes {
		writeRoute(t, rdb, keys, h, rt)
	}
	cfg := testConfig(testenv.RedisAddr(), prefix)
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
	return r, func(host string, rt common.Route) { writeRoute(t, rdb, keys, host, rt) }
}

// blocking is a backend whose /slow requests wait for release.
type blocking struct {
	*httptest.Server
	name     string
	inFlight atomic.Int64
	release  chan struct{}
}

func newBlocking(t *testing.T, name string) *blocking {
	b := &blocking{name: name, release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			b.inFlight.Add(1)
			defer b.inFlight.Add(-1)
			<-b.release
		}
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		b.Close()
	})
	return b
}

func (b *blocking) addr() string { return b.Listener.Addr().String() }

func TestStickySessions(t *testing.T) {
	mk := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/login" {
				http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: "s-" + name, Path: "/"})
			}
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := mk("a"), mk("b")
	sticky := route("st", 0, be(a.Listener.Addr().String(), "ia", true), be(b.Listener.Addr().String(), "ib", true))
	sticky.Sticky = true
	plain := sticky
	plain.Sticky = false
	r, write := routerWith(t, nil, map[string]common.Route{"st.apps.io": sticky, "plain.apps.io": plain})

	client := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar}
	}
	do := func(c *http.Client, method, host, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+host+path, strings.NewReader("x"))
		if method == http.MethodGet {
			req.Body, req.ContentLength = nil, 0
		}
		c.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", r.Addr())
		}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	pinned := func(resp *http.Response) string {
		for _, c := range resp.Cookies() {
			if c.Name == StickyCookie {
				return c.Value
			}
		}
		return ""
	}

	t.Run("session cookie pins the client", func(t *testing.T) {
		c := client()
		resp, first := do(c, http.MethodGet, "st.apps.io", "/login")
		if got := pinned(resp); got != "i"+first {
			t.Fatalf("sticky cookie %q after login answered by %s", got, first)
		}
		for i := 0; i < 10; i++ {
			method := http.MethodGet
			if i%2 == 1 {
				method = http.MethodPost // the ReverseProxy path honours it too
			}
			if _, body := do(c, method, "st.apps.io", "/page"); body != first {
				t.Fatalf("request %d (%s) went to %s, pinned to %s", i, method, body, first)
			}
		}
	})
	t.Run("no session cookie, no pin", func(t *testing.T) {
		c := client()
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			resp, body := do(c, http.MethodGet, "st.apps.io", "/page")
			if pinned(resp) != "" {
				t.Fatal("sticky cookie without a session cookie")
			}
			seen[body] = true
		}
		if len(seen) != 2 {
			t.Fatalf("round-robin broken: %v", seen)
		}
	})
	t.Run("route not sticky", func(t *testing.T) {
		if resp, _ := do(client(), http.MethodGet, "plain.apps.io", "/login"); pinned(resp) != "" {
			t.Fatal("sticky cookie on a route that did not opt in")
		}
	})
	t.Run("pinned instance unhealthy moves the pin", func(t *testing.T) {
		c := client()
		resp, first := do(c, http.MethodGet, "st.apps.io", "/login")
		if pinned(resp) == "" {
			t.Fatal("not pinned")
		}
		other := map[string]string{"a": "b", "b": "a"}[first]
		moved := sticky
		moved.Backends = append([]common.Backend(nil), sticky.Backends...)
		for i := range moved.Backends {
			moved.Backends[i].Healthy = moved.Backends[i].Instance != "i"+first
		}
		write("st.apps.io", moved)
		testenv.WaitFor(t, "route update", 5*time.Second, func() bool {
			e, _ := r.table.Lookup("st.apps.io")
			return e.pool.Backends()[0].Healthy != true || e.pool.Backends()[1].Healthy != true
		})
		resp, body := do(c, http.MethodGet, "st.apps.io", "/page")
		if body != other || pinned(resp) != "i"+other {
			t.Fatalf("after %s turned unhealthy: answered by %s, pin %q", first, body, pinned(resp))
		}
		if _, body := do(c, http.MethodGet, "st.apps.io", "/page"); body != other {
			t.Fatalf("new pin not honoured: %s", body)
		}
	})
}

func TestLeastConnWired(t *testing.T) {
	a, b := newBlocking(t, "a"), newBlocking(t, "b")
	rt := route("lc", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true))
	rt.Balance = "least_conn"
	r, _ := routerWith(t, nil, map[string]common.Route{"lc.apps.io": rt})
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/slow", nil)
		req.Host = "lc.apps.io"
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	testenv.WaitFor(t, "one request in flight", 5*time.Second, func() bool { return a.inFlight.Load()+b.inFlight.Load() == 1 })
	idle := "a"
	if a.inFlight.Load() == 1 {
		idle = "b"
	}
	for i := 0; i < 6; i++ {
		if _, body := get(t, http.DefaultClient, r.Addr(), "lc.apps.io", "/fast"); body != idle {
			t.Fatalf("request %d went to %s, want the idle backend %s", i, body, idle)
		}
	}
}

func TestWebSocketEcho(t *testing.T) {
	s := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	r, _ := routerWith(t, func(c *Config) {
		// Longer than the pause below: an upgraded connection has no response timeout.
		c.ResponseTimeout = 300 * time.Millisecond
	}, map[string]common.Route{"ws.apps.io": route("ws", 0, be(s.Listener.Addr().String(), "iw", true))})

	cfg, err := websocket.NewConfig("ws://ws.apps.io/echo", "http://ws.apps.io/")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := websocket.NewClient(cfg, raw) // a real RFC 6455 handshake and framing
	if err != nil {
		t.Fatalf("handshake through the router: %v", err)
	}
	for i, msg := range []string{"hello", strings.Repeat("x", 70000), "after a pause"} {
		if i == 2 {
			time.Sleep(500 * time.Millisecond) // past ResponseTimeout
		}
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("message %d: echo of %d bytes, err %v", i, len(got), err)
		}
	}
}

func TestServerSentEvents(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: two\n\n")
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) })
	r, _ := routerWith(t, nil, map[string]common.Route{"sse.apps.io": route("sse", 0, be(s.Listener.Addr().String(), "is", true))})
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/events", nil)
	req.Host = "sse.apps.io"
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q %v: not flushed while the stream is open", line, err)
	}
}

func TestHopByHopHeaders(t *testing.T) {
	var seen atomic.Pointer[http.Header]
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		seen.Store(&h)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Resp-End", "kept")
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(s.Close)
	r, _ := routerWith(t, nil, map[string]common.Route{"hop.apps.io": route("hop", 0, be(s.Listener.Addr().String(), "ih", true))})
	for _, method := range []string{http.MethodGet, http.MethodPost} { // fast path and ReverseProxy path
		t.Run(method, func(t *testing.T) {
			c, err := net.Dial("tcp", r.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			body := ""
			if method == http.MethodPost {
				body = "Content-Length: 2\r\n"
			}
			fmt.Fprintf(c, "%s /h HTTP/1.1\r\nHost: hop.apps.io\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\n"+
				"Keep-Alive: 300\r\nProxy-Authorization: Basic eA==\r\nTe: gzip\r\nX-End: kept\r\nX-Request-Id: rid-%s\r\n%s\r\n", method, method, body)
			if method == http.MethodPost {
				fmt.Fprint(c, "hi")
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := *seen.Load()
			for _, k := range []string{"X-Private", "Keep-Alive", "Proxy-Authorization", "Te"} {
				if v := h.Get(k); v != "" {
					t.Errorf("backend got hop-by-hop %s: %q", k, v)
				}
			}
			if h.Get("X-End") != "kept" || h.Get("X-Request-Id") != "rid-"+method {
				t.Errorf("end-to-end headers lost: %v", h)
			}
			for _, k := range []string{"X-Resp-Hop", "Keep-Alive"} {
				if v := resp.Header.Get(k); v != "" {
					t.Errorf("client got hop-by-hop %s: %q", k, v)
				}
			}
			if resp.Header.Get("X-Resp-End") != "kept" {
				t.Errorf("response header lost: %v", resp.Header)
			}
		})
	}
}

func TestRequestIDLogged(t *testing.T) {
	live := newBackend(t, "live")
	var logBuf syncBuffer
	r, _ := routerWith(t, func(c *Config) {
		c.AccessLog = true
		c.AccessLogOutput = &logBuf
	}, map[string]common.Route{"id.apps.io": route("id", 0, be(live.addr(), "il", true))})
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/x", nil)
	req.Host = "id.apps.io"
	req.Header.Set("X-Request-Id", "given-id-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	get(t, http.DefaultClient, r.Addr(), "id.apps.io", "/generated")
	testenv.WaitFor(t, "access log", 5*time.Second, func() bool {
		return strings.Contains(logBuf.String(), `"path":"/generated"`) && strings.Contains(logBuf.String(), `"path":"/x"`)
	})
	ids := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request" {
			ids[rec["path"].(string)], _ = rec["request_id"].(string)
		}
	}
	if ids["/x"] != "given-id-1" {
		t.Errorf("given request id not logged: %v", ids)
	}
	if len(ids["/generated"]) != 32 || ids["/generated"] != live.last.Load().Header.Get("X-Request-Id") {
		t.Errorf("generated id %q not logged as sent to the backend", ids["/generated"])
	}
}

func TestMaxConnsPerBackend(t *testing.T) {
	a := newBlocking(t, "a")
	r, _ := routerWith(t, func(c *Config) { c.MaxConnsPerBackend = 1 },
		map[string]common.Route{"full.apps.io": route("full", 0, be(a.addr(), "ia", true))})
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/slow", nil)
		req.Host = "full.apps.io"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testenv.WaitFor(t, "request in flight", 5*time.Second, func() bool { return a.inFlight.Load() == 1 })
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, "http://"+r.Addr()+"/", strings.NewReader("x"))
		if method == http.MethodGet {
			req.Body, req.ContentLength = nil, 0
		}
		req.Host = "full.apps.io"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderRouterError) != ErrEndpointsFull {
			t.Fatalf("%s to a full backend: %d %q", method, resp.StatusCode, resp.Header.Get(HeaderRouterError))
		}
	}
	close(a.release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("in-flight request: %d", code)
	}
	// The client may see the answer's last byte just before the router
	// releases the slot: wait for it, bounded.
	var code int
	var body string
	testenv.WaitFor(t, "slot freed", 5*time.Second, func() bool {
		var resp *http.Response
		resp, body = get(t, http.DefaultClient, r.Addr(), "full.apps.io", "/")
		code = resp.StatusCode
		return code != http.StatusServiceUnavailable
	})
	if code != 200 || body != "a" {
		t.Fatalf("after the slot freed: %d %q", code, body)
	}
}

// selfSigned writes a certificate for names (and its key) under dir.
func selfSigned(t *testing.T, dir, file string, names ...string) TLSCert {
	c, k := testenv.SelfSigned(t, dir, file, names...)
	return TLSCert{CertFile: c, KeyFile: k}
}

func TestTLSFront(t *testing.T) {
	dir := t.TempDir()
	wild := selfSigned(t, dir, "wild", "*.apps.io")
	custom := selfSigned(t, dir, "custom", "shop.example.com")
	live := newBackend(t, "live")
	rt := route("tls", 0, be(live.addr(), "il", true))
	r, _ := routerWith(t, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.tlsFlags = []string{wild.CertFile + ":" + wild.KeyFile}
		c.TLSCerts = []TLSCert{custom}
	}, map[string]common.Route{"tls.apps.io": rt, "shop.example.com": rt})

	for _, tt := range []struct{ host, wantCN string }{
		{"tls.apps.io", "*.apps.io"},
		{"shop.example.com", "shop.example.com"},
	} {
		t.Run(tt.host, func(t *testing.T) {
			var cn string
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{
					InsecureSkipVerify: true, // self-signed; the chosen certificate is checked below
					VerifyConnection: func(cs tls.ConnectionState) error {
						cn = cs.PeerCertificates[0].Subject.CommonName
						return nil
					},
				},
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", r.TLSAddr())
				},
			}}
			resp, err := c.Get("https://" + tt.host + "/secure")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cn != tt.wantCN {
				t.Fatalf("SNI %s got certificate %q, want %q", tt.host, cn, tt.wantCN)
			}
			if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "live") {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if p := live.last.Load().Header.Get("X-Forwarded-Proto"); p != "https" {
				t.Fatalf("X-Forwarded-Proto %q", p)
			}
			// A POST on the same connection is handed to net/http, which
			// must still know the connection is TLS.
			resp, err = c.Post("https://"+tt.host+"/form", "text/plain", strings.NewReader("data"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "live data" {
				t.Fatalf("POST: %d %q", resp.StatusCode, body)
			}
			if p := live.last.Load().Header.Get("X-Forwarded-Proto"); p != "https" {
				t.Fatalf("POST X-Forwarded-Proto %q", p)
			}
		})
	}
	t.Run("bad flag", func(t *testing.T) {
		cfg := testConfig("127.0.0.1:6379", "x")
		cfg.TLSAddr = "127.0.0.1:0"
		cfg.tlsFlags = []string{"only-a-cert.pem"}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "cert.pem:key.pem") {
			t.Fatalf("want a flag error, got %v", err)
		}
	})
}

// TestSIGTERMDrain: on stop the router reports unhealthy for the drain
// period while still serving, then stops accepting, and requests in flight
// complete.
func TestSIGTERMDrain(t *testing.T) {
	a := newBlocking(t, "a")
	rdb, prefix := testenv.Redis(t)
	writeRoute(t, rdb, common.NewKeys(prefix), "d.apps.io", route("d", 0, be(a.addr(), "ia", true)))
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.DrainPeriod = 300 * time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)

	inflight := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/slow", nil)
		req.Host = "d.apps.io"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- fmt.Sprint(resp.StatusCode, " ", string(body))
	}()
	testenv.WaitFor(t, "request in flight", 5*time.Second, func() bool { return a.inFlight.Load() == 1 })
	cancel() // what SIGTERM does in `dinp router`
	health := func() int {
		resp, err := http.Get("http://" + r.StatusAddr() + "/health")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testenv.WaitFor(t, "unhealthy", 2*time.Second, func() bool { return health() == http.StatusServiceUnavailable })
	// Still serving new requests while draining.
	if resp, _ := get(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, r.Addr(), "d.apps.io", "/"); resp.StatusCode != 200 {
		t.Fatalf("request during drain: %d", resp.StatusCode)
	}
	testenv.WaitFor(t, "stops accepting", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", r.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-runDone:
		t.Fatalf("Run returned before the in-flight request finished: %v", err)
	default:
	}
	close(a.release)
	if got := <-inflight; got != "200 a" {
		t.Fatalf("in-flight request: %s", got)
	}
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestResponseTimeout: a backend that does not answer in time gets a 502,
// and the request is not sent elsewhere (the backend may have acted on it).
func TestResponseTimeout(t *testing.T) {
	a, b := newBlocking(t, "a"), newBlocking(t, "b")
	r, _ := routerWith(t, func(c *Config) { c.ResponseTimeout = 200 * time.Millisecond },
		map[string]common.Route{"slow.apps.io": route("slow", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true))})
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, "http://"+r.Addr()+"/slow", strings.NewReader("x"))
		if method == http.MethodGet {
			req.Body, req.ContentLength = nil, 0
		}
		req.Host = "slow.apps.io"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(HeaderRouterError) != ErrEndpointFailure {
			t.Fatalf("%s: %d %q", method, resp.StatusCode, resp.Header.Get(HeaderRouterError))
		}
	}
	testenv.WaitFor(t, "slow requests parked", 2*time.Second, func() bool { return a.inFlight.Load()+b.inFlight.Load() == 2 })
	time.Sleep(100 * time.Millisecond) // a wrong retry would show up as a third parked request
	if n := a.inFlight.Load() + b.inFlight.Load(); n != 2 {
		t.Fatalf("%d requests reached backends, want 2 (no retry after a timeout)", n)
	}
}

// TestBackendDiesMidBody: a chunked response cut short by the backend must
// reach the client as an error, never as a complete shorter body.
func TestBackendDiesMidBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c))
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			}()
		}
	}()
	r, _ := routerWith(t, nil, map[string]common.Route{"cut.apps.io": route("cut", 0, be(ln.Addr().String(), "ic", true))})
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/", nil)
	req.Host = "cut.apps.io"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("truncated body %q delivered as complete", body)
	}
}

func TestConnPoolSweep(t *testing.T) {
	p := newConnPool(DefaultConfig())
	now := time.Now()
	mk := func() (*backendConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &backendConn{Conn: a, addr: "old:1"}, b
	}
	stale, stalePeer := mk()
	fresh, _ := mk()
	p.put(stale, now.Add(-2*p.idleTimeout))
	p.put(fresh, now)
	p.sweep(now)
	if got, _, err := p.get(context.Background(), "old:1", false, now); err != nil || got != fresh {
		t.Fatalf("after sweep got %v %v, want the fresh connection", got, err)
	}
	stalePeer.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := stalePeer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("stale connection not closed: %v", err)
	}
}
