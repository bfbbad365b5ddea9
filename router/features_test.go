package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
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
