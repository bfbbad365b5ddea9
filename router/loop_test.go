package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// Plain-HTTP connections are served by event loops (loop.go) unless
// Config.Loops is 0, when each gets a goroutine (front.go), as on the TLS
// listener. Every behaviour test of this package runs on both:
// TestBehaviourOnGoroutineFront runs them again in a child process with
// goroutineFrontEnv set, where testConfig turns the loops off.
const goroutineFrontEnv = "DINP_TEST_ROUTER_GOROUTINE_FRONT"

var goroutineFront = os.Getenv(goroutineFrontEnv) == "1"

func TestBehaviourOnGoroutineFront(t *testing.T) {
	if goroutineFront || nodeLocalPath {
		t.Skip("already a re-run")
	}
	if testing.Short() {
		t.Skip("runs the package's tests a second time")
	}
	cmd := exec.Command(os.Args[0], "-test.run", ".", "-test.skip", "^TestBehaviourOn(GoroutineFront|NodeLocalPath)$", "-test.count", "1")
	cmd.Env = append(os.Environ(), goroutineFrontEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("the package's tests failed with a goroutine per connection (%v):\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatalf("no PASS in the goroutine-front run:\n%s", out.String())
	}
	t.Logf("package tests pass with a goroutine per connection (%s)", time.Since(start).Round(100*time.Millisecond))
}

// loopGauge reads dinp_router_loop_connections from the status listener.
func loopGauge(t *testing.T, r *Router) string {
	t.Helper()
	resp, err := http.Get("http://" + r.StatusAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "dinp_router_loop_connections "); ok {
			return v
		}
	}
	t.Fatalf("no dinp_router_loop_connections in /metrics")
	return ""
}

// The event loops serve plain-HTTP keep-alive connections (unless turned
// off), and a connection whose request they do not serve themselves (a
// POST) leaves them for net/http with nothing lost.
func TestEventLoopsServePlainHTTP(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	a := newBackend(t, "a")
	host := "loops.apps.io"
	writeRoute(t, rdb, keys, host, route("loops", 0, be(a.addr(), "ia", true)))
	r, err := New(testConfig(testenv.RedisAddr(), prefix))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	once := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	testenv.WaitFor(t, "route served", 5*time.Second, func() bool {
		resp, _ := get(t, once, r.Addr(), host, "/")
		return resp.StatusCode == 200
	})

	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(req string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp
	}
	// Two pipelined GETs, then one more: all answered on the loop.
	get := fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	io.WriteString(c, get)
	for i := 0; i < 2; i++ {
		if resp := roundTrip(get); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "a" {
			t.Fatalf("GET %d: %d from %q", i, resp.StatusCode, resp.Header.Get("X-Backend"))
		}
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("third GET: %v", err)
	} else {
		io.ReadAll(resp.Body)
	}
	want := "1"
	if goroutineFront {
		want = "0"
	}
	// (connections of the wait above may still be closing)
	testenv.WaitFor(t, "dinp_router_loop_connections = "+want+" with one open plain-HTTP connection", 2*time.Second,
		func() bool { return loopGauge(t, r) == want })
	post := fmt.Sprintf("POST /form HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello", host)
	if resp := roundTrip(post); resp.StatusCode != 200 {
		t.Fatalf("POST after GETs: %d", resp.StatusCode)
	}
	if last := a.last.Load(); last == nil || last.Method != http.MethodPost || last.URL.Path != "/form" {
		t.Fatalf("backend saw %+v, want the POST", last)
	}
	if resp := roundTrip(get); resp.StatusCode != 200 {
		t.Fatalf("GET after POST: %d", resp.StatusCode)
	}
	testenv.WaitFor(t, "dinp_router_loop_connections = 0 once the connection went to net/http", 2*time.Second,
		func() bool { return loopGauge(t, r) == "0" })
}

// A client that pipelines many requests the router answers itself (an
// unknown host: 404 at once) gets every answer, in order, on one
// connection.
func TestPipelinedRejects(t *testing.T) {
	r, _ := routerWith(t, nil, nil)
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	const n = 5000
	go func() {
		var b bytes.Buffer
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "GET /%d HTTP/1.1\r\nHost: nowhere-%d.apps.io\r\n\r\n", i, i)
		}
		c.Write(b.Bytes())
	}()
	br := bufio.NewReader(c)
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), fmt.Sprintf("nowhere-%d.apps.io", i)) {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

// An idle keep-alive connection holds its read buffer only, whatever
// answers it once relayed: 300 clients that each fetched 100 KB and stay
// connected cost a few MB, not 300 × the answer buffer.
func TestIdleConnectionsHoldNoAnswerBuffers(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100<<10)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }))
	defer s.Close()
	host := "big.apps.io"
	r, _ := routerWith(t, func(c *Config) { c.MaxConnsPerAddr = 0 }, map[string]common.Route{host: route("big", 0, be(s.Listener.Addr().String(), "ib", true))})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // and the pools' victims
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	const n = 300
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := io.ReadAll(resp.Body); len(got) != len(body) {
			t.Fatalf("client %d: %d bytes", i, len(got))
		}
	}
	grown := int64(heap()) - int64(before)
	t.Logf("heap in use grew by %d KiB with %d idle connections", grown>>10, n)
	if limit := int64(n * 16 << 10); grown > limit { // ~7 KiB each measured (~11 under -race), ~23 when answer buffers stay
		t.Fatalf("heap in use grew by %d KiB with %d idle connections (> %d KiB): idle connections keep answer buffers", grown>>10, n, limit>>10)
	}
}
