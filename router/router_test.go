package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/common/testenv"
)

const testClusterToken = "router-test-token"

func testConfig(redisAddr, prefix string) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.StatusAddr = "127.0.0.1:0"
	cfg.RedisAddr = redisAddr
	cfg.KeyPrefix = prefix
	cfg.ClusterToken = testClusterToken
	cfg.ResyncInterval = 200 * time.Millisecond
	cfg.DialTimeout = time.Second
	cfg.ResponseTimeout = 5 * time.Second
	cfg.DrainPeriod = 0
	cfg.AccessLog = false
	cfg.Log = common.DiscardLogger()
	if nodeLocalPath {
		cfg.NodeID = testNode
	}
	if goroutineFront {
		cfg.Loops = 0
	}
	return cfg
}

// backend is an app instance answering its name and recording what it saw.
type backend struct {
	*httptest.Server
	name string
	hits atomic.Int64
	last atomic.Pointer[http.Request]
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		b.last.Store(r.Clone(context.Background()))
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s", name, body)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

func route(app string, version int64, backends ...common.Backend) common.Route {
	return common.Route{App: app, Release: 1, Version: version, Backends: backends}
}

// be is a backend at addr. On the node-local path (see nodeLocalPath) addr
// is its node-local address on the router's node and its published
// address refuses connections, so a test passes only if the router dials
// the node-local one.
func be(addr, inst string, healthy bool) common.Backend {
	if nodeLocalPath {
		return common.Backend{Addr: refusingAddr, LocalAddr: addr, Node: testNode, Instance: inst, Healthy: healthy, Release: 1}
	}
	return common.Backend{Addr: addr, Instance: inst, Healthy: healthy, Release: 1}
}

// writeRoute writes like the server does: INCR version, HSET, PUBLISH.
func writeRoute(t *testing.T, rdb *redis.Client, keys common.Keys, host string, rt common.Route) {
	t.Helper()
	ctx := context.Background()
	v, err := rdb.Incr(ctx, keys.RoutesVersion()).Result()
	if err != nil {
		t.Fatal(err)
	}
	rt.Version = v
	js, _ := json.Marshal(rt)
	if err := rdb.HSet(ctx, keys.Routes(), host, js).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Publish(ctx, keys.RoutesChanged(), host).Err(); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, c *http.Client, routerAddr, host, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+routerAddr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("get %s%s: %v", host, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestRouterErrors covers answers the router makes itself, without Redis.
func TestRouterErrors(t *testing.T) {
	r, err := New(testConfig(testenv.ClosedAddr(t), "x"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ln.Close(); r.statusLn.Close(); r.rdb.Close() })
	for host, rt := range map[string]common.Route{
		"empty.apps.io": route("empty", 1),
	} {
		js, _ := json.Marshal(rt)
		r.table.Update(host, func(*entry, bool) (*entry, bool) {
			e, err := r.buildEntry(host, string(js), nil)
			if err != nil {
				t.Fatal(err)
			}
			return e, true
		})
	}
	tests := []struct {
		name, host, ua string
		status         int
		code           string
	}{
		{"unknown host", "nope.apps.io", "", http.StatusNotFound, ErrUnknownRoute},
		{"unknown host with port", "Nope.apps.io:8080", "", http.StatusNotFound, ErrUnknownRoute},
		{"empty host", "", "", http.StatusBadRequest, ErrEmptyHost},
		{"no backends", "EMPTY.apps.io:80", "", http.StatusServiceUnavailable, ErrNoEndpoints},
		{"lvs check before routes load", "whatever", lvsUserAgent, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			req.Host = tt.host
			if tt.ua != "" {
				req.Header.Set("User-Agent", tt.ua)
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			if got := w.Header().Get(HeaderRouterError); got != tt.code {
				t.Fatalf("%s = %q, want %q", HeaderRouterError, got, tt.code)
			}
			if tt.code != "" && !strings.Contains(w.Body.String(), tt.code) {
				t.Fatalf("body %q lacks code", w.Body)
			}
		})
	}
	r.ready.Store(true)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("User-Agent", lvsUserAgent)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("lvs check when ready: %d", w.Code)
	}
}

func TestConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "nonsense"
	cfg.ResyncInterval = 0
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "addr") || !strings.Contains(err.Error(), "resync-interval") {
		t.Fatalf("want errors naming addr and resync-interval, got %v", err)
	}
}

// TestHealthNotReadyWithoutRedis: no route load, no traffic.
func TestHealthNotReadyWithoutRedis(t *testing.T) {
	r, err := New(testConfig(testenv.ClosedAddr(t), "x"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + r.StatusAddr() + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("health %d before any route load, want 503", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	host := "hello.apps.io"
	writeRoute(t, rdb, keys, host, route("hello", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true)))

	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.ResyncInterval = time.Hour // prove pub/sub alone applies changes
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	client := &http.Client{Timeout: 5 * time.Second}
	testenv.WaitFor(t, "health 200", 5*time.Second, func() bool {
		resp, err := http.Get("http://" + r.StatusAddr() + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	t.Run("both backends serve", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 10; i++ {
			resp, body := get(t, client, r.Addr(), "Hello.Apps.io:8080", "/p?q=1")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			seen[resp.Header.Get("X-Backend")]++
		}
		if seen["a"] != 5 || seen["b"] != 5 {
			t.Fatalf("round robin split %v, want 5/5", seen)
		}
	})

	t.Run("forwarding headers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/h", nil)
		req.Host = host
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := a.last.Load()
		if resp.Header.Get("X-Backend") == "b" {
			got = b.last.Load()
		}
		h := got.Header
		// The client is no trusted proxy: its own claim is not passed on.
		if xff := h.Get("X-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", xff)
		}
		if h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != host {
			t.Errorf("X-Forwarded-Proto %q, X-Forwarded-Host %q", h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"))
		}
		if got.Host != host {
			t.Errorf("backend saw Host %q", got.Host)
		}
		if len(h.Get("X-Request-Id")) != 32 || h.Get("X-Request-Start") == "" {
			t.Errorf("X-Request-Id %q, X-Request-Start %q", h.Get("X-Request-Id"), h.Get("X-Request-Start"))
		}
	})

	t.Run("unknown host", func(t *testing.T) {
		resp, _ := get(t, client, r.Addr(), "other.apps.io", "/")
		if resp.StatusCode != 404 || resp.Header.Get(HeaderRouterError) != ErrUnknownRoute {
			t.Fatalf("status %d, header %q", resp.StatusCode, resp.Header.Get(HeaderRouterError))
		}
	})

	t.Run("route change via publish", func(t *testing.T) {
		c := newBackend(t, "c")
		writeRoute(t, rdb, keys, host, route("hello", 0, be(c.addr(), "ic", true), be(a.addr(), "ia", false)))
		testenv.WaitFor(t, "only c serves", 2*time.Second, func() bool {
			for i := 0; i < 4; i++ {
				resp, _ := get(t, client, r.Addr(), host, "/")
				if resp.Header.Get("X-Backend") != "c" {
					return false
				}
			}
			return true
		})
		// New host appears, then is deleted.
		writeRoute(t, rdb, keys, "new.apps.io", route("new", 0, be(b.addr(), "ib", true)))
		testenv.WaitFor(t, "new host routed", 2*time.Second, func() bool {
			resp, _ := get(t, client, r.Addr(), "new.apps.io", "/")
			return resp.StatusCode == 200
		})
		rdb.HDel(context.Background(), keys.Routes(), "new.apps.io")
		rdb.Publish(context.Background(), keys.RoutesChanged(), "new.apps.io")
		testenv.WaitFor(t, "deleted host gone", 2*time.Second, func() bool {
			resp, _ := get(t, client, r.Addr(), "new.apps.io", "/")
			return resp.StatusCode == 404
		})
		// Put both original backends back.
		writeRoute(t, rdb, keys, host, route("hello", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true)))
		testenv.WaitFor(t, "a and b again", 2*time.Second, func() bool {
			resp, _ := get(t, client, r.Addr(), host, "/")
			return resp.Header.Get("X-Backend") != "c"
		})
	})

	t.Run("killed backend: zero failures", func(t *testing.T) {
		a.Close() // listener and connections
		for i := 0; i < 40; i++ {
			resp, body := get(t, client, r.Addr(), host, "/")
			if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b" {
				t.Fatalf("request %d: status %d backend %q body %q", i, resp.StatusCode, resp.Header.Get("X-Backend"), body)
			}
		}
		if n := counterValue(r.metrics.app("hello").series().retries); n < 1 {
			t.Fatalf("retries metric %v, want ≥ 1", n)
		}
	})

	t.Run("metrics and routes", func(t *testing.T) {
		resp, err := http.Get("http://" + r.StatusAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`dinp_router_requests_total{app="hello",class="2xx"}`, `dinp_router_request_duration_seconds_count{app="hello"}`} {
			if !strings.Contains(string(body), want) {
				t.Fatalf("metrics lack %s:\n%s", want, body)
			}
		}
		if strings.Contains(string(body), `class="1xx"`) {
			t.Fatal("series created for a status class never seen")
		}
		resp, err = http.Get("http://" + r.StatusAddr() + "/routes")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/routes without the cluster token: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest("GET", "http://"+r.StatusAddr()+"/routes", nil)
		req.Header.Set("Authorization", "Bearer "+testClusterToken)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var dump RoutesDump
		json.NewDecoder(resp.Body).Decode(&dump)
		resp.Body.Close()
		if !dump.Ready || dump.Size != 1 || dump.Routes[0].Host != host || dump.Version == 0 {
			t.Fatalf("routes dump %+v", dump)
		}
	})
}

// tcpForwarder relays to target until closed, so a test can cut Redis off.
type tcpForwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newForwarder(t *testing.T, target string) *tcpForwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpForwarder{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, u)
			f.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *tcpForwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func TestKeepsServingWhenRedisUnreachable(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	a := newBackend(t, "a")
	writeRoute(t, rdb, keys, "k.apps.io", route("k", 0, be(a.addr(), "ia", true)))
	fwd := newForwarder(t, testenv.RedisAddr())
	cfg := testConfig(fwd.ln.Addr().String(), prefix)
	cfg.ResyncInterval = 50 * time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
	fwd.close()
	testenv.WaitFor(t, "failed resyncs", 5*time.Second, func() bool { return counterValue(r.metrics.syncFails) >= 3 })
	resp, body := get(t, http.DefaultClient, r.Addr(), "k.apps.io", "/")
	if resp.StatusCode != 200 || body != "a " {
		t.Fatalf("after losing Redis: %d %q", resp.StatusCode, body)
	}
	if !r.Healthy() {
		t.Fatal("router turned unhealthy because Redis is down; it still serves its table")
	}
}

// TestRedisDataLossKeepsTable: an empty hash without a version counter is
// Redis losing its data, not every app being deleted.
func TestRedisDataLossKeepsTable(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	a := newBackend(t, "a")
	writeRoute(t, rdb, keys, "k.apps.io", route("k", 0, be(a.addr(), "ia", true)))
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.ResyncInterval = 50 * time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
	rdb.Del(context.Background(), keys.Routes(), keys.RoutesVersion())
	before := counterValue(r.metrics.syncFails)
	testenv.WaitFor(t, "resync noticed", 5*time.Second, func() bool { return counterValue(r.metrics.syncFails) > before+1 })
	if resp, _ := get(t, http.DefaultClient, r.Addr(), "k.apps.io", "/"); resp.StatusCode != 200 {
		t.Fatalf("status %d after Redis lost its data", resp.StatusCode)
	}
}

// TestPartialRoutesAfterDataLoss: after Redis lost its data the leader
// rewrites routes one at a time. A full resync that sees only some of them
// must drop none of the others; once the leader marks the hash complete for
// the store's epoch, a full resync is the whole truth again and removes
// hosts that are really gone.
func TestPartialRoutesAfterDataLoss(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	ctx := context.Background()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	markComplete := func() {
		ep, err := redisx.StoreEpoch(ctx, rdb, keys)
		if err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, keys.RoutesComplete(), redisx.EpochMarker(ep), 0)
	}
	writeRoute(t, rdb, keys, "a.apps.io", route("a", 0, be(a.addr(), "ia", true)))
	writeRoute(t, rdb, keys, "b.apps.io", route("b", 0, be(b.addr(), "ib", true)))
	markComplete()
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.ResyncInterval = 50 * time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)

	// Redis restarted empty; the leader has rewritten a's route so far.
	for _, k := range []string{keys.Routes(), keys.RoutesVersion(), keys.Epoch(), keys.RoutesComplete()} {
		rdb.Del(ctx, k)
	}
	writeRoute(t, rdb, keys, "a.apps.io", route("a", 0, be(a.addr(), "ia", true)))
	before := counterValue(r.metrics.syncFails)
	testenv.WaitFor(t, "two partial resyncs", 5*time.Second, func() bool { return counterValue(r.metrics.syncFails) > before+1 })
	for host, want := range map[string]string{"a.apps.io": "a ", "b.apps.io": "b "} {
		if resp, body := get(t, http.DefaultClient, r.Addr(), host, "/"); resp.StatusCode != 200 || body != want {
			t.Fatalf("%s during the rewrite: %d %q", host, resp.StatusCode, body)
		}
	}

	// The leader finished: b is really gone.
	markComplete()
	testenv.WaitFor(t, "b dropped once the hash is complete", 5*time.Second, func() bool {
		resp, _ := get(t, http.DefaultClient, r.Addr(), "b.apps.io", "/")
		return resp.StatusCode == http.StatusNotFound
	})
	if resp, _ := get(t, http.DefaultClient, r.Addr(), "a.apps.io", "/"); resp.StatusCode != 200 {
		t.Fatalf("a after the rewrite: %d", resp.StatusCode)
	}
}

// TestUpgradePassThrough: a WebSocket-style upgrade reaches the backend and
// the connection then carries bytes both ways.
func TestUpgradePassThrough(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}))
	t.Cleanup(s.Close)
	writeRoute(t, rdb, keys, "ws.apps.io", route("ws", 0, be(s.Listener.Addr().String(), "iw", true)))
	var logBuf syncBuffer
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.AccessLog = true
	cfg.AccessLogOutput = &logBuf
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)

	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: ws.apps.io\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprint(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	c.Close()

	// One access log line with the agreed keys.
	get(t, http.DefaultClient, r.Addr(), "ws.apps.io", "/plain")
	testenv.WaitFor(t, "access log line", 2*time.Second, func() bool { return strings.Contains(logBuf.String(), `"path":"/plain"`) })
	for _, line := range strings.Split(logBuf.String(), "\n") {
		if !strings.Contains(line, `"path":"/plain"`) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"host", "method", "path", "status", "bytes", "duration_ms", "backend", "request_id"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("access log lacks %q: %s", k, line)
			}
		}
		if rec["status"] != float64(400) || rec["backend"] != s.Listener.Addr().String() {
			t.Errorf("access log %s", line)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// resetter accepts connections, reads the request and closes without
// answering, as Docker's port proxy does once the container behind it died.
func resetter(t *testing.T) string {
	t.Helper()
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
			buf := make([]byte, 4096)
			c.Read(buf)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST instead of FIN
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestAppMetricsRedisDown: with Redis unreachable, requests are answered as
// ever and the flush drops their counts into a metric instead of failing
// anything; with Redis back, the next flush writes only what came after.
func TestAppMetricsRedisDown(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	r, err := New(testConfig(testenv.ClosedAddr(t), prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ln.Close(); r.statusLn.Close(); r.rdb.Close() })
	b := newBackend(t, "a")
	js, _ := json.Marshal(route("shop", 1, be(b.Listener.Addr().String(), "a", true)))
	r.table.Update("shop.apps.io", func(*entry, bool) (*entry, bool) {
		e, err := r.buildEntry("shop.apps.io", string(js), nil)
		if err != nil {
			t.Fatal(err)
		}
		return e, true
	})
	serve := func(n int) {
		for range n {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = "shop.apps.io"
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d with Redis down", w.Code)
			}
		}
	}
	serve(5)
	f := &appFlusher{r: r, store: appmetrics.NewStore(r.rdb, r.keys), last: map[*appMetrics]appmetrics.Traffic{}}
	at := time.Unix(1_800_000_005, 0)
	f.flush(context.Background(), at)
	if d := counterValue(r.metrics.appDropped); d != 5 {
		t.Fatalf("dropped %v, want the 5 requests", d)
	}
	if e := counterValue(r.metrics.appFlushes.WithLabelValues("error")); e != 1 {
		t.Fatalf("flush errors %v, want 1", e)
	}

	r.rdb.Close()
	r.rdb = rdb // Redis is back
	f.store = appmetrics.NewStore(rdb, r.keys)
	serve(3)
	f.flush(context.Background(), at)
	w, err := f.store.Read(context.Background(), "shop", appmetrics.FineStep, 1, at.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if w.Traffic[0] == nil || w.Traffic[0].Requests() != 3 || w.Traffic[0].Classes[2] != 3 {
		t.Fatalf("after Redis is back: %+v, want the 3 later requests only", w.Traffic[0])
	}
}
