package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

func TestStickySessions(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
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
		r, write := p.routerWith(t, nil, map[string]common.Route{"st.apps.io": sticky, "plain.apps.io": plain})

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
	})
}

func TestLeastConnWired(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		a, b := newBlocking(t, "a"), newBlocking(t, "b")
		rt := route("lc", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true))
		rt.Balance = "least_conn"
		r, _ := p.routerWith(t, nil, map[string]common.Route{"lc.apps.io": rt})
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
	})
}

// TestRetryPostOnRefused: a request with a body is retried intact when the
// first backend refuses the connection.
func TestRetryPostOnRefused(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		rdb, prefix := testenv.Redis(t)
		keys := common.NewKeys(prefix)
		live := newBackend(t, "live")
		dead := testenv.ClosedAddr(t)
		writeRoute(t, rdb, keys, "p.apps.io", route("p", 0, be(dead, "dead", true), be(live.addr(), "live", true)))
		r, err := New(p.testConfig(testenv.RedisAddr(), prefix))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, r)
		testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
		for i := 0; i < 6; i++ {
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.Addr()+"/", strings.NewReader("payload"))
			req.Host = "p.apps.io"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "live payload" {
				t.Fatalf("post %d: %d %q", i, resp.StatusCode, body)
			}
		}
	})
}

// TestRetryIdempotentOnReset: a GET whose backend drops the connection before
// answering is retried on another backend; a POST is not (the backend may
// have acted on it).
func TestRetryIdempotentOnReset(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		rdb, prefix := testenv.Redis(t)
		keys := common.NewKeys(prefix)
		live := newBackend(t, "live")
		cfg := p.testConfig(testenv.RedisAddr(), prefix)
		cfg.FailMark = time.Millisecond // keep choosing the broken backend in turn
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		broken := resetter(t)
		writeRoute(t, rdb, keys, "g.apps.io", route("g", 0, be(broken, "broken", true), be(live.addr(), "live", true)))
		testenv.Run(t, r)
		testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; i < 10; i++ {
			resp, body := get(t, c, r.Addr(), "g.apps.io", "/")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
				t.Fatalf("get %d: %d %q", i, resp.StatusCode, body)
			}
		}
		posts502 := 0
		for i := 0; i < 10; i++ {
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.Addr()+"/", strings.NewReader("x"))
			req.Host = "g.apps.io"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadGateway {
				posts502++
			}
		}
		if posts502 == 0 {
			t.Fatal("a POST dropped by its backend was retried (or never reached it)")
		}
	})
}

// TestAllBackendsDown: 502 endpoint_failure, not a hang.
func TestAllBackendsDown(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		rdb, prefix := testenv.Redis(t)
		keys := common.NewKeys(prefix)
		writeRoute(t, rdb, keys, "d.apps.io", route("d", 0, be(testenv.ClosedAddr(t), "x", true), be(testenv.ClosedAddr(t), "y", false)))
		r, err := New(p.testConfig(testenv.RedisAddr(), prefix))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, r)
		testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
		resp, _ := get(t, http.DefaultClient, r.Addr(), "d.apps.io", "/")
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(HeaderRouterError) != ErrEndpointFailure {
			t.Fatalf("status %d header %q", resp.StatusCode, resp.Header.Get(HeaderRouterError))
		}
	})
}

// TestResponseTimeout: a backend that does not answer in time gets a 502,
// and the request is not sent elsewhere (the backend may have acted on it).
func TestResponseTimeout(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		a, b := newBlocking(t, "a"), newBlocking(t, "b")
		r, _ := p.routerWith(t, func(c *Config) { c.ResponseTimeout = 200 * time.Millisecond },
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
	})
}

// TestBackendDiesMidBody: a chunked response cut short by the backend must
// reach the client as an error, never as a complete shorter body.
func TestBackendDiesMidBody(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
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
		r, _ := p.routerWith(t, nil, map[string]common.Route{"cut.apps.io": route("cut", 0, be(ln.Addr().String(), "ic", true))})
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
		// The cut request still ends like any other: the backend's
		// in-flight count (least-conn, connection caps) back to 0, the
		// request counted.
		e, _ := r.table.Lookup("cut.apps.io")
		testenv.WaitFor(t, "the backend's in-flight count back to 0", 2*time.Second, func() bool {
			return e.pool.Backends()[0].Active() == 0
		})
		testenv.WaitFor(t, "the cut request counted", 2*time.Second, func() bool {
			return counterValue(r.metrics.requests.WithLabelValues("cut", "2xx")) == 1
		})
	})
}

func TestMaxConnsPerBackend(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		a := newBlocking(t, "a")
		r, _ := p.routerWith(t, func(c *Config) { c.MaxConnsPerBackend = 1 },
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
	})
}

// A router on node n1 dials n1's instances at their node-local address and
// other nodes' instances at their published address; a router on no node
// (or another node) only ever uses published addresses.
func TestNodeLocalDial(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		onN1, onN2 := newBackend(t, "on-n1"), newBackend(t, "on-n2")
		// Each instance answers on only one of its two addresses: the one the
		// right router must use.
		rt := common.Route{App: "nl", Release: 1, Backends: []common.Backend{
			{Addr: refusingAddr, LocalAddr: onN1.addr(), Node: "n1", Instance: "i1", Healthy: true, Release: 1},
			{Addr: onN2.addr(), LocalAddr: refusingAddr, Node: "n2", Instance: "i2", Healthy: true, Release: 1},
		}}
		for _, c := range []struct {
			node         string
			want1, want2 bool // which instances answer
		}{
			{node: "n1", want1: true, want2: true},
			{node: "", want1: false, want2: true},
			{node: "n3", want1: false, want2: true},
		} {
			t.Run("router on "+c.node, func(t *testing.T) {
				r, _ := p.routerWith(t, func(cfg *Config) { cfg.NodeID = c.node; cfg.FailMark = time.Minute },
					map[string]common.Route{"nl.apps.io": rt})
				h1, h2 := onN1.hits.Load(), onN2.hits.Load()
				client := &http.Client{Timeout: 10 * time.Second}
				for range 20 {
					resp, body := get(t, client, r.Addr(), "nl.apps.io", "/")
					if resp.StatusCode != 200 {
						t.Fatalf("status %d: %s", resp.StatusCode, body)
					}
				}
				got1, got2 := onN1.hits.Load() > h1, onN2.hits.Load() > h2
				if got1 != c.want1 || got2 != c.want2 {
					t.Fatalf("instance on n1 answered: %v (want %v), on n2: %v (want %v)", got1, c.want1, got2, c.want2)
				}
			})
		}
	})
}

// A node-local address that takes connections but never completes them
// (an instance that stopped leaves an address nothing answers for) costs
// LocalDialTimeout, not DialTimeout, and the request is served by another
// instance.
func TestLocalDialTimeout(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		stuck := stuckListener(t)
		live := newBackend(t, "live")
		rt := common.Route{App: "st", Release: 1, Backends: []common.Backend{
			{Addr: refusingAddr, LocalAddr: stuck, Node: "n1", Instance: "stuck", Healthy: true, Release: 1},
			{Addr: refusingAddr, LocalAddr: live.addr(), Node: "n1", Instance: "live", Healthy: true, Release: 1},
		}}
		r, _ := p.routerWith(t, func(cfg *Config) {
			cfg.NodeID = "n1"
			cfg.DialTimeout = time.Minute
			cfg.LocalDialTimeout = 200 * time.Millisecond
			cfg.FailMark = time.Minute
		}, map[string]common.Route{"st.apps.io": rt})
		// With the minute-long DialTimeout the client would give up first.
		client := &http.Client{Timeout: 20 * time.Second}
		for range 4 {
			resp, body := get(t, client, r.Addr(), "st.apps.io", "/")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
		}
	})
}

// A retry that starts after the first attempt spent the front's unwatched
// wait (200 ms) dialling an address that never answered still sends the
// request (it used to wait for the response timeout: the request was
// dropped when the read that writes it found its deadline past).
func TestRetryAfterSlowDial(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		stuck := stuckListener(t)
		live := newBackend(t, "live")
		r, _ := p.routerWith(t, func(cfg *Config) {
			cfg.DialTimeout, cfg.LocalDialTimeout = 300*time.Millisecond, 300*time.Millisecond
			cfg.FailMark = time.Minute
		}, map[string]common.Route{"st.apps.io": route("st", 0, be(stuck, "stuck", true), be(live.addr(), "live", true))})
		client := &http.Client{Timeout: 20 * time.Second}
		for range 4 {
			resp, body := get(t, client, r.Addr(), "st.apps.io", "/")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
		}
	})
}
