package router

// One behaviour suite, every path. The router answers on more than one path
// (its own HTTP/1.1 for GET/HEAD — on the event loops for plain HTTP, with a
// goroutine per connection on TLS —, net/http with ReverseProxy for
// everything those hand over); behaviour.go decides routing, rejects,
// forwarding headers, request ids, metrics and the access log once for all
// of them. The tests of this file and behaviour_proxy_test.go run under
// forEachPath: on the event loops ("loop"), with a goroutine per connection
// ("front"), and with every connection handed to net/http ("nethttp"), as
// distribution runs one conformance suite per storage driver. A test that
// also sends what the front never serves (a POST) exercises net/http on
// both. On the node-local path (TestBehaviourOnNodeLocalPath) all of it
// runs again.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// pathCase is one way the router answers: what a test's Config gets.
type pathCase struct {
	name string
	edit func(*Config)
}

// paths are the router's request paths; a new one is a line here.
var paths = []pathCase{
	{name: "loop", edit: func(c *Config) { c.Loops = -1 }},
	{name: "front", edit: func(c *Config) { c.Loops = 0 }},
	{name: "nethttp", edit: func(c *Config) { c.handOffAll = true }},
}

// forEachPath runs fn as a subtest on every path.
func forEachPath(t *testing.T, fn func(t *testing.T, p pathCase)) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) { fn(t, p) })
	}
}

// with returns edit followed by the path's own setting.
func (p pathCase) with(edit func(*Config)) func(*Config) {
	return func(c *Config) {
		if edit != nil {
			edit(c)
		}
		if p.edit != nil {
			p.edit(c)
		}
	}
}

// routerWith is routerWith on path p.
func (p pathCase) routerWith(t *testing.T, edit func(*Config), routes map[string]common.Route) (*Router, func(host string, rt common.Route)) {
	t.Helper()
	return routerWith(t, p.with(edit), routes)
}

// testConfig is testConfig on path p.
func (p pathCase) testConfig(redisAddr, prefix string) Config {
	cfg := testConfig(redisAddr, prefix)
	p.with(nil)(&cfg)
	return cfg
}

// TestUntrustedForwardingHeaders plays a client that claims to be behind
// TLS, to have arrived long ago and to come from another address: with no
// trusted proxy configured, the app sees what the router saw, on both proxy
// paths (a GET on the front, a POST handed to net/http); from a trusted
// proxy the same headers pass.
func TestUntrustedForwardingHeaders(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		for _, tc := range []struct {
			name    string
			trusted []string
			want    map[string]string
		}{
			{"untrusted client", nil, map[string]string{
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Real-Ip": "127.0.0.1"}},
			{"trusted proxy", []string{"127.0.0.0/8"}, map[string]string{
				"X-Forwarded-For": "6.6.6.6, 127.0.0.1", "X-Forwarded-Proto": "https", "X-Real-Ip": "6.6.6.6",
				"X-Request-Start": "t=1"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				app := newBackend(t, "a")
				const host = "trust.apps.io"
				r, _ := p.routerWith(t, func(c *Config) { c.TrustedProxies = tc.trusted },
					map[string]common.Route{host: route("trust", 1, be(app.addr(), "i1", true))})
				for _, method := range []string{http.MethodGet, http.MethodPost} {
					req, _ := http.NewRequest(method, "http://"+r.Addr()+"/x", strings.NewReader("body"))
					if method == http.MethodGet {
						req.Body, req.ContentLength = nil, 0
					}
					req.Host = host
					req.Header.Set("X-Forwarded-For", "6.6.6.6")
					req.Header.Set("X-Forwarded-Proto", "https")
					req.Header.Set("X-Request-Start", "t=1")
					req.Header.Set("X-Real-IP", "6.6.6.6")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("%s: %d", method, resp.StatusCode)
					}
					h := app.last.Load().Header
					for k, want := range tc.want {
						if got := strings.Join(h.Values(k), "|"); got != want {
							t.Errorf("%s: %s = %q, want %q", method, k, got, want)
						}
					}
					if tc.trusted == nil && h.Get("X-Request-Start") == "t=1" {
						t.Errorf("%s: the client's X-Request-Start reached the app", method)
					}
				}
			})
		}
	})
}

// TestFrontForwardedHeaders: what the app sees of a simple GET, pipelined.
// (TestHopByHopHeaders covers the basic hop-by-hop list.)
func TestFrontForwardedHeaders(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		e := newFtEcho(t, "f")
		// The client is a trusted proxy here: its forwarding headers stay
		// (TestUntrustedForwardingHeaders covers everyone else).
		r, _ := p.routerWith(t, func(c *Config) { c.TrustedProxies = []string{"127.0.0.1"} },
			map[string]common.Route{"fw.apps.io": route("fw", 0, be(e.addr(), "if", true))})
		fc := ftDial(t, r.Addr())
		const query = "/p?q=1&r=%20&s=a%2Fb&t=%E2%82%AC&u"
		fc.send(ftReq("GET", query, "fw.apps.io",
			"X-Request-Id: client-id-1",
			"X-Forwarded-For: 1.2.3.4",
			"X-Forwarded-Proto: https",
			"X-Request-Start: t=1700000000000",
			"Connection: X-Secret, X-Other-Secret",
			"X-Secret: s1",
			"X-Other-Secret: s2",
			"Keep-Alive: timeout=30",
			"TE: gzip, deflate", // "TE: trailers" may legitimately be forwarded (gRPC)
			"Trailer: X-T",
			"Proxy-Authorization: Basic eA==",
			"Proxy-Connection: keep-alive",
			"X-Custom: Value With  Spaces, and=commas",
			"X-Multi: one",
			"X-Multi: two",
			"Accept-Encoding: gzip",
		) + ftReq("GET", "/second", "fw.apps.io") + ftReq("GET", "/third", "FW.apps.io:8080"))
		for _, want := range []string{"f GET " + query + " ", "f GET /second ", "f GET /third "} {
			resp, body := fc.read("GET")
			ftWantEcho(t, resp, body, want)
		}

		t.Run("client values", func(t *testing.T) {
			got, _ := e.request(t, query)
			h := got.Header
			if got.RequestURI != query {
				t.Errorf("request URI %q, want %q unchanged", got.RequestURI, query)
			}
			if got.Host != "fw.apps.io" {
				t.Errorf("Host %q", got.Host)
			}
			for k, want := range map[string][]string{
				"X-Request-Id":      {"client-id-1"},
				"X-Forwarded-For":   {"1.2.3.4, 127.0.0.1"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"fw.apps.io"},
				"X-Request-Start":   {"t=1700000000000"},
				"X-Custom":          {"Value With  Spaces, and=commas"},
				"X-Multi":           {"one", "two"},
				"Accept-Encoding":   {"gzip"},
			} {
				if !slices.Equal(h[k], want) {
					t.Errorf("%s = %q, want %q", k, h[k], want)
				}
			}
			for _, k := range []string{"X-Secret", "X-Other-Secret", "Keep-Alive", "Te", "Trailer", "Proxy-Authorization", "Proxy-Connection"} {
				if v, ok := h[k]; ok {
					t.Errorf("hop-by-hop %s forwarded: %q", k, v)
				}
			}
			if c := h.Get("Connection"); strings.Contains(strings.ToLower(c), "secret") {
				t.Errorf("client's Connection tokens forwarded: %q", c)
			}
		})
		t.Run("router values", func(t *testing.T) {
			hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
			var ids []string
			for _, uri := range []string{"/second", "/third"} {
				got, _ := e.request(t, uri)
				h := got.Header
				if len(h["X-Request-Id"]) != 1 || !hexID.MatchString(h.Get("X-Request-Id")) {
					t.Errorf("%s: X-Request-Id %q, want one generated 32-hex id", uri, h["X-Request-Id"])
				}
				ids = append(ids, h.Get("X-Request-Id"))
				if !slices.Equal(h["X-Forwarded-For"], []string{"127.0.0.1"}) {
					t.Errorf("%s: X-Forwarded-For %q", uri, h["X-Forwarded-For"])
				}
				if !slices.Equal(h["X-Forwarded-Proto"], []string{"http"}) {
					t.Errorf("%s: X-Forwarded-Proto %q", uri, h["X-Forwarded-Proto"])
				}
				if !slices.Equal(h["X-Forwarded-Host"], []string{got.Host}) {
					t.Errorf("%s: X-Forwarded-Host %q, Host %q", uri, h["X-Forwarded-Host"], got.Host)
				}
				start := h["X-Request-Start"]
				if len(start) != 1 {
					t.Errorf("%s: X-Request-Start %q", uri, start)
				} else if ms, err := strconv.ParseInt(start[0], 10, 64); err != nil || ms < time.Now().Add(-time.Hour).UnixMilli() || ms > time.Now().Add(time.Minute).UnixMilli() {
					t.Errorf("%s: X-Request-Start %q is not the arrival time in Unix milliseconds", uri, start[0])
				}
			}
			if len(ids) == 2 && ids[0] == ids[1] {
				t.Errorf("pipelined requests share the request id %s", ids[0])
			}
			if got, _ := e.request(t, "/third"); got.Host != "FW.apps.io:8080" {
				t.Errorf("Host %q, want the client's", got.Host)
			}
		})
	})
}

func TestHopByHopHeaders(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
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
		r, _ := p.routerWith(t, nil, map[string]common.Route{"hop.apps.io": route("hop", 0, be(s.Listener.Addr().String(), "ih", true))})
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
	})
}

// TestFrontResponseHeaders: the app's end-to-end response headers arrive
// as sent (repeated ones too); hop-by-hop ones do not.
func TestFrontResponseHeaders(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		b := newFtRaw(t, func(req *http.Request) (string, bool) {
			body := "body"
			if req.Method == http.MethodHead {
				body = ""
			}
			return "HTTP/1.1 200 OK\r\n" +
				"Connection: X-Internal, keep-alive\r\n" +
				"Connection: X-Internal-Two\r\n" +
				"X-Internal: 1\r\n" +
				"X-Internal-Two: 2\r\n" +
				"Keep-Alive: timeout=5, max=100\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Set-Cookie: a=1; Path=/\r\n" +
				"Set-Cookie: b=2; Path=/; HttpOnly\r\n" +
				"Cache-Control: private, max-age=0\r\n" +
				"X-Kept: yes\r\n" +
				"Content-Length: 4\r\n\r\n" + body, false
		})
		r, _ := p.routerWith(t, nil, map[string]common.Route{"rh.apps.io": route("rh", 0, be(b.addr, "ib", true))})
		fc := ftDial(t, r.Addr())
		for _, method := range []string{"GET", "HEAD", "GET"} {
			resp, body := fc.roundTrip(method, ftReq(method, "/", "rh.apps.io"))
			if resp.StatusCode != 200 || (method == "GET" && body != "body") || (method == "HEAD" && body != "") {
				t.Fatalf("%s: %d %q", method, resp.StatusCode, body)
			}
			h := resp.Header
			for _, k := range []string{"X-Internal", "X-Internal-Two", "Keep-Alive", "Proxy-Connection"} {
				if v, ok := h[k]; ok {
					t.Errorf("%s: client got hop-by-hop %s: %q", method, k, v)
				}
			}
			if c := strings.ToLower(strings.Join(h["Connection"], ",")); strings.Contains(c, "internal") {
				t.Errorf("%s: app's Connection tokens reached the client: %q", method, h["Connection"])
			}
			if !slices.Equal(h["Set-Cookie"], []string{"a=1; Path=/", "b=2; Path=/; HttpOnly"}) {
				t.Errorf("%s: Set-Cookie %q", method, h["Set-Cookie"])
			}
			if h.Get("Cache-Control") != "private, max-age=0" || h.Get("X-Kept") != "yes" {
				t.Errorf("%s: end-to-end headers %v", method, h)
			}
			if resp.Close {
				t.Errorf("%s: the app's Connection header closed the client connection", method)
			}
		}
	})
}

func TestRequestIDLogged(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		live := newBackend(t, "live")
		var logBuf syncBuffer
		r, _ := p.routerWith(t, func(c *Config) {
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
	})
}

// TestFrontKeepAlive: persistent connections, pipelining, Connection: close,
// HEAD framing and Host matching on one raw connection at a time.
func TestFrontKeepAlive(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		e := newFtEcho(t, "e")
		r, _ := p.routerWith(t, nil, map[string]common.Route{"ka.apps.io": route("ka", 0, be(e.addr(), "ie", true))})

		t.Run("three sequential GETs on one connection", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			for i := 0; i < 3; i++ {
				path := fmt.Sprintf("/seq/%d", i)
				resp, body := fc.roundTrip("GET", ftReq("GET", path, "ka.apps.io"))
				ftWantEcho(t, resp, body, "e GET "+path+" ")
				if resp.Close {
					t.Fatalf("request %d: router asked to close a keep-alive connection", i)
				}
			}
		})

		t.Run("two pipelined GETs in one write", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			fc.send(ftReq("GET", "/pipe/1", "ka.apps.io") + ftReq("GET", "/pipe/2", "ka.apps.io"))
			for _, path := range []string{"/pipe/1", "/pipe/2"} {
				resp, body := fc.read("GET")
				ftWantEcho(t, resp, body, "e GET "+path+" ")
			}
		})

		t.Run("pipelined GET HEAD GET", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			fc.send(ftReq("GET", "/ph/1", "ka.apps.io") + ftReq("HEAD", "/ph/2", "ka.apps.io") + ftReq("GET", "/ph/3", "ka.apps.io"))
			resp, body := fc.read("GET")
			ftWantEcho(t, resp, body, "e GET /ph/1 ")
			resp, body = fc.read("HEAD")
			if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("e HEAD /ph/2 ")) {
				t.Fatalf("HEAD: %d, Content-Length %d, body %q", resp.StatusCode, resp.ContentLength, body)
			}
			resp, body = fc.read("GET")
			ftWantEcho(t, resp, body, "e GET /ph/3 ")
		})

		t.Run("HEAD keeps Content-Length and sends no body", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			resp, body := fc.roundTrip("HEAD", ftReq("HEAD", "/head", "ka.apps.io"))
			want := strconv.Itoa(len("e HEAD /head "))
			if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != want || body != "" {
				t.Fatalf("HEAD: %d, Content-Length %q (want %s), body %q", resp.StatusCode, resp.Header.Get("Content-Length"), want, body)
			}
			if resp.Header.Get("X-Backend") != "e" {
				t.Fatalf("HEAD response lacks the app's headers: %v", resp.Header)
			}
			// Body bytes after the HEAD answer would be read as this status line.
			resp, body = fc.roundTrip("GET", ftReq("GET", "/after-head", "ka.apps.io"))
			ftWantEcho(t, resp, body, "e GET /after-head ")
		})

		t.Run("Connection: close", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			resp, body := fc.roundTrip("GET", ftReq("GET", "/close", "ka.apps.io", "Connection: close"))
			ftWantEcho(t, resp, body, "e GET /close ")
			// http.ReadResponse turns the response's Connection: close into
			// resp.Close (and drops the header).
			if !resp.Close {
				t.Fatalf("response to Connection: close lacks Connection: close: %v", resp.Header)
			}
			fc.expectClosed()
		})

		t.Run("Host with port and upper case", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			for _, host := range []string{"KA.Apps.IO:8080", "ka.apps.io:80", "Ka.apps.io"} {
				resp, body := fc.roundTrip("GET", ftReq("GET", "/host", host))
				ftWantEcho(t, resp, body, "e GET /host ")
				if got, _ := e.request(t, "/host"); got.Host != host {
					t.Fatalf("backend saw Host %q, want the client's %q", got.Host, host)
				}
			}
		})

		t.Run("absolute-form request target", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			resp, body := fc.roundTrip("GET", ftReq("GET", "http://ka.apps.io/abs?x=1", "ka.apps.io"))
			ftWantEcho(t, resp, body, "e GET /abs?x=1 ")
		})
	})
}

func TestServerSentEvents(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
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
		r, _ := p.routerWith(t, nil, map[string]common.Route{"sse.apps.io": route("sse", 0, be(s.Listener.Addr().String(), "is", true))})
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
	})
}

func TestStreamingPassThrough(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		rdb, prefix := testenv.Redis(t)
		keys := common.NewKeys(prefix)
		release := make(chan struct{})
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("first\n"))
			w.(http.Flusher).Flush()
			<-release
			w.Write([]byte("second\n"))
		}))
		t.Cleanup(s.Close)
		t.Cleanup(func() {
			select {
			case <-release:
			default:
				close(release)
			}
		})
		writeRoute(t, rdb, keys, "s.apps.io", route("s", 0, be(s.Listener.Addr().String(), "is", true)))
		r, err := New(p.testConfig(testenv.RedisAddr(), prefix))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, r)
		testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/", nil)
		req.Host = "s.apps.io"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first chunk %q %v (not streamed before the response finished)", line, err)
		}
		close(release)
		if line, _ := br.ReadString('\n'); line != "second\n" {
			t.Fatalf("second chunk %q", line)
		}
	})
}

// TestRejects: the router's own answers (400 empty_host, 404 unknown_route,
// 503 no_endpoints) carry the same status, headers and body on every path,
// no body to a HEAD, keep the connection open, and are counted.
func TestRejects(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		live := newBackend(t, "live")
		r, _ := p.routerWith(t, nil, map[string]common.Route{
			"empty.apps.io": route("empty", 0),
			"ok.apps.io":    route("ok", 0, be(live.addr(), "i1", true)),
		})
		for _, tt := range []struct {
			name, host string
			status     int
			code, body string
		}{
			{"unknown host", "nope.apps.io", 404, ErrUnknownRoute, "404 unknown_route: no app at nope.apps.io\n"},
			{"unknown host with port", "Nope.Apps.io:8080", 404, ErrUnknownRoute, "404 unknown_route: no app at nope.apps.io\n"},
			{"empty host", "", 400, ErrEmptyHost, "400 empty_host: request has no Host header\n"},
			{"no endpoints", "EMPTY.apps.io", 503, ErrNoEndpoints, "503 no_endpoints: app empty has no running instance\n"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				before := counterValue(r.metrics.rejected.WithLabelValues(tt.code))
				fc := ftDial(t, r.Addr())
				for _, method := range []string{"GET", "HEAD"} {
					raw := method + " /x HTTP/1.1\r\nHost: " + tt.host + "\r\n\r\n"
					resp, body := fc.roundTrip(method, raw)
					h := resp.Header
					if resp.StatusCode != tt.status || h.Get(HeaderRouterError) != tt.code {
						t.Fatalf("%s: %d %s=%q, want %d %s", method, resp.StatusCode, HeaderRouterError, h.Get(HeaderRouterError), tt.status, tt.code)
					}
					if h.Get("Content-Type") != "text/plain; charset=utf-8" || h.Get("Cache-Control") != "no-store" {
						t.Errorf("%s: Content-Type %q, Cache-Control %q", method, h.Get("Content-Type"), h.Get("Cache-Control"))
					}
					if h.Get("Content-Length") != strconv.Itoa(len(tt.body)) {
						t.Errorf("%s: Content-Length %q, want %d", method, h.Get("Content-Length"), len(tt.body))
					}
					want := tt.body
					if method == "HEAD" {
						want = ""
					}
					if body != want {
						t.Errorf("%s: body %q, want %q", method, body, want)
					}
					if resp.Close {
						t.Errorf("%s: a reject closed the connection", method)
					}
					// net/http dates its own answers, the front does not: the
					// answer came from the path under test.
					if _, dated := h["Date"]; dated != (p.name == "nethttp") {
						t.Errorf("%s: Date %q on the %s path", method, h.Get("Date"), p.name)
					}
				}
				// The connection still serves.
				resp, body := fc.roundTrip("GET", ftReq("GET", "/after", "ok.apps.io"))
				if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
					t.Fatalf("after the reject: %d %q", resp.StatusCode, body)
				}
				if n := counterValue(r.metrics.rejected.WithLabelValues(tt.code)) - before; n != 2 {
					t.Errorf("rejected{%s} counted %v, want 2", tt.code, n)
				}
			})
		}
		t.Run("Connection: close", func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			resp, _ := fc.roundTrip("GET", ftReq("GET", "/", "nope.apps.io", "Connection: close"))
			if resp.StatusCode != 404 || !resp.Close {
				t.Fatalf("%d, close %v", resp.StatusCode, resp.Close)
			}
			fc.expectClosed()
		})
	})
}

// TestAccessLogFields: one line per request, the same fields on every path,
// for a proxied request (the client's request id, the decoded path without
// query, the backend), a HEAD (no bytes) and a reject (no app, no backend,
// a generated id).
func TestAccessLogFields(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		live := newBackend(t, "live")
		var logBuf syncBuffer
		r, _ := p.routerWith(t, func(c *Config) {
			c.AccessLog = true
			c.AccessLogOutput = &logBuf
		}, map[string]common.Route{"al.apps.io": route("al", 0, be(live.addr(), "i1", true))})
		fc := ftDial(t, r.Addr())
		resp, body := fc.roundTrip("GET", ftReq("GET", "/a%20b?x=1", "al.apps.io", "X-Request-Id: rid-1"))
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %d %q", resp.StatusCode, body)
		}
		fc.roundTrip("HEAD", ftReq("HEAD", "/head", "al.apps.io"))
		_, rejBody := fc.roundTrip("GET", ftReq("GET", "/nope", "nope.apps.io"))
		var lines []map[string]any
		testenv.WaitFor(t, "three access log lines", 5*time.Second, func() bool {
			lines = lines[:0]
			for _, l := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "request" {
					lines = append(lines, rec)
				}
			}
			return len(lines) == 3
		})
		want := []map[string]any{
			{"host": "al.apps.io", "app": "al", "method": "GET", "path": "/a b", "status": 200.0,
				"bytes": float64(len(body)), "backend": live.addr(), "request_id": "rid-1"},
			{"host": "al.apps.io", "app": "al", "method": "HEAD", "path": "/head", "status": 200.0,
				"bytes": 0.0, "backend": live.addr()},
			{"host": "nope.apps.io", "app": "", "method": "GET", "path": "/nope", "status": 404.0,
				"bytes": float64(len(rejBody)), "backend": ""},
		}
		hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
		for i, w := range want {
			got := lines[i]
			for k, v := range w {
				if got[k] != v {
					t.Errorf("line %d: %s = %v, want %v", i, k, got[k], v)
				}
			}
			if got["level"] != "INFO" || got["component"] != "router" || got["time"] == nil {
				t.Errorf("line %d: not shaped like the router's log: %v", i, got)
			}
			if d, ok := got["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("line %d: duration_ms %v", i, got["duration_ms"])
			}
			if id, _ := got["request_id"].(string); i > 0 && !hexID.MatchString(id) {
				t.Errorf("line %d: generated request_id %q", i, id)
			}
		}
	})
}

// TestMetricsCounted: every path counts a request in its app's series once
// (status class, latency, response bytes), failed attempts and retries, and
// rejects by code; a request for no app creates no app series.
func TestMetricsCounted(t *testing.T) {
	forEachPath(t, func(t *testing.T, p pathCase) {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/missing" {
				http.NotFound(w, r)
				return
			}
			io.WriteString(w, "hello")
		}))
		t.Cleanup(app.Close)
		r, _ := p.routerWith(t, func(c *Config) { c.FailMark = time.Minute }, map[string]common.Route{
			"m.apps.io":  route("m", 0, be(testenv.ClosedAddr(t), "dead", true), be(app.Listener.Addr().String(), "i1", true)),
			"m0.apps.io": route("m0", 0),
		})
		fc := ftDial(t, r.Addr())
		for i := 0; i < 3; i++ {
			if resp, body := fc.roundTrip("GET", ftReq("GET", "/", "m.apps.io")); resp.StatusCode != 200 || body != "hello" {
				t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
			}
		}
		if resp, _ := fc.roundTrip("GET", ftReq("GET", "/missing", "m.apps.io")); resp.StatusCode != 404 {
			t.Fatalf("GET /missing: %d", resp.StatusCode)
		}
		fc.roundTrip("GET", ftReq("GET", "/", "m0.apps.io"))
		fc.roundTrip("GET", ftReq("GET", "/", "nobody.apps.io"))
		m := r.metrics
		class := func(app, c string) float64 { return counterValue(m.requests.WithLabelValues(app, c)) }
		// A request is counted once its answer is sent: wait, bounded.
		testenv.WaitFor(t, "requests counted", 5*time.Second, func() bool {
			return class("m", "2xx") == 3 && class("m", "4xx") == 1 && class("m0", "5xx") == 1
		})
		var hist dto.Metric
		m.latency.WithLabelValues("m").(prometheus.Histogram).Write(&hist)
		if n := hist.GetHistogram().GetSampleCount(); n != 4 {
			t.Errorf("latency samples %d, want 4", n)
		}
		if m.bytes != nil {
			if n := counterValue(m.bytes.WithLabelValues("m")); n != float64(3*len("hello")+len("404 page not found\n")) {
				t.Errorf("response bytes %v", n)
			}
		}
		s := m.app("m").series()
		if f, rt := counterValue(s.failures), counterValue(s.retries); f != 1 || rt != 1 {
			t.Errorf("failures %v, retries %v, want 1 and 1 (the dead instance is marked after one refusal)", f, rt)
		}
		for code, want := range map[string]float64{ErrNoEndpoints: 1, ErrUnknownRoute: 1} {
			if n := counterValue(m.rejected.WithLabelValues(code)); n != want {
				t.Errorf("rejected{%s} %v, want %v", code, n, want)
			}
		}
		m.mu.Lock()
		_, made := m.apps["nobody"]
		m.mu.Unlock()
		if made || class("", "4xx") != 0 {
			t.Error("a request for no app made app series")
		}
	})
}
