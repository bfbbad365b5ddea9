package router

// Black-box tests of the router's plain-HTTP front: what an HTTP/1.1 client
// sees on the main port. Most talk raw TCP so the framing is exact, and
// follow each answer with another request on the same connection: a front
// that lost track of where a message ends fails the second one.

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// ftEcho is an app answering "<name> <method> <request-uri> <body>" with
// an explicit Content-Length (HEAD included), and recording every request
// it saw by request URI.
type ftEcho struct {
	*httptest.Server
	name string
	hits atomic.Int64

	mu   sync.Mutex
	seen map[string]*http.Request // by RequestURI, guarded by mu
	body map[string]string        // request bodies by RequestURI, guarded by mu
}

func newFtEcho(t *testing.T, name string) *ftEcho {
	t.Helper()
	e := &ftEcho{name: name, seen: map[string]*http.Request{}, body: map[string]string{}}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.seen[r.RequestURI] = r.Clone(r.Context())
		e.body[r.RequestURI] = string(body)
		e.mu.Unlock()
		out := fmt.Sprintf("%s %s %s %s", name, r.Method, r.RequestURI, body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		io.WriteString(w, out)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *ftEcho) addr() string { return e.Listener.Addr().String() }

// request returns the request the app saw at uri, failing if none.
func (e *ftEcho) request(t *testing.T, uri string) (*http.Request, string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.seen[uri]
	if !ok {
		t.Fatalf("backend %s never saw %q (saw %v)", e.name, uri, e.uris())
	}
	return r, e.body[uri]
}

// uriList lists the request URIs the app saw.
func (e *ftEcho) uriList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.uris()
}

func (e *ftEcho) uris() []string {
	var out []string
	for k := range e.seen {
		out = append(out, k)
	}
	return out
}

// ftRaw is an app speaking raw HTTP/1.1: for each request read on a
// connection it writes answer(req) verbatim, and closes the connection
// after it when closeAfter is true.
type ftRaw struct {
	addr string
	hits atomic.Int64
}

func newFtRaw(t *testing.T, answer func(req *http.Request) (raw string, closeAfter bool)) *ftRaw {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &ftRaw{addr: ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					b.hits.Add(1)
					raw, closeAfter := answer(req)
					if _, err := io.WriteString(c, raw); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return b
}

// ftClient is one raw TCP connection to the router.
type ftClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func ftDial(t *testing.T, addr string) *ftClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second)) // a framing bug must not hang the suite
	return &ftClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (fc *ftClient) send(raw string) {
	fc.t.Helper()
	if _, err := io.WriteString(fc.c, raw); err != nil {
		fc.t.Fatalf("write: %v", err)
	}
}

// read reads the final response to a request of method (skipping 1xx
// answers, like a client does) and its whole body.
func (fc *ftClient) read(method string) (*http.Response, string) {
	fc.t.Helper()
	for {
		resp, err := http.ReadResponse(fc.br, &http.Request{Method: method})
		if err != nil {
			fc.t.Fatalf("read response to %s: %v", method, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fc.t.Fatalf("read body of %d response to %s (got %d bytes): %v", resp.StatusCode, method, len(body), err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return resp, string(body)
	}
}

// roundTrip sends raw and reads the response to it.
func (fc *ftClient) roundTrip(method, raw string) (*http.Response, string) {
	fc.t.Helper()
	fc.send(raw)
	return fc.read(method)
}

// expectClosed requires the router to have closed the connection with no
// further bytes.
func (fc *ftClient) expectClosed() {
	fc.t.Helper()
	fc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := fc.br.Peek(1)
	var ne net.Error
	switch {
	case err == nil:
		rest, _ := fc.br.Peek(fc.br.Buffered())
		fc.t.Fatalf("connection still open with bytes %q", append(b[:0:0], rest...))
	case errors.As(err, &ne) && ne.Timeout():
		fc.t.Fatal("connection left open (read timed out instead of EOF)")
	}
}

// ftReq is a raw request head: method, target, Host (omitted when
// empty) and extra header lines.
func ftReq(method, target, host string, headers ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\n")
	if host != "" {
		b.WriteString("Host: " + host + "\r\n")
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func ftWantEcho(t *testing.T, resp *http.Response, body, want string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || body != want {
		t.Fatalf("got %d %q (%s=%q), want 200 %q", resp.StatusCode, body,
			HeaderRouterError, resp.Header.Get(HeaderRouterError), want)
	}
}

// TestFrontMixedConnection: requests the front hands to another code path
// (bodies, other methods, upgrades it does not see here) share a keep-alive
// connection with simple GETs, pipelined or not, without losing a byte.
func TestFrontMixedConnection(t *testing.T) {
	e := newFtEcho(t, "m")
	r, _ := routerWith(t, nil, map[string]common.Route{"mix.apps.io": route("mix", 0, be(e.addr(), "im", true))})
	reqs := []struct{ method, raw, want string }{
		{"GET", ftReq("GET", "/m/1", "mix.apps.io"), "m GET /m/1 "},
		{"POST", ftReq("POST", "/m/2", "mix.apps.io", "Content-Length: 5") + "hello", "m POST /m/2 hello"},
		{"GET", ftReq("GET", "/m/3", "mix.apps.io"), "m GET /m/3 "},
		{"GET", ftReq("GET", "/m/4", "mix.apps.io", "Content-Length: 4") + "body", "m GET /m/4 body"},
		{"PUT", ftReq("PUT", "/m/5", "mix.apps.io", "Transfer-Encoding: chunked") + "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "m PUT /m/5 abcde"},
		{"GET", ftReq("GET", "/m/6", "mix.apps.io", "Transfer-Encoding: chunked") + "2\r\nxy\r\n0\r\n\r\n", "m GET /m/6 xy"},
		{"OPTIONS", ftReq("OPTIONS", "/m/7", "mix.apps.io"), "m OPTIONS /m/7 "},
		{"DELETE", ftReq("DELETE", "/m/8", "mix.apps.io"), "m DELETE /m/8 "},
		{"GET", ftReq("GET", "/m/9", "mix.apps.io"), "m GET /m/9 "},
	}
	t.Run("one at a time", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		for _, rq := range reqs {
			resp, body := fc.roundTrip(rq.method, rq.raw)
			ftWantEcho(t, resp, body, rq.want)
		}
	})
	t.Run("pipelined in one write", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		var all strings.Builder
		for _, rq := range reqs {
			all.WriteString(rq.raw)
		}
		fc.send(all.String())
		for _, rq := range reqs {
			resp, body := fc.read(rq.method)
			ftWantEcho(t, resp, body, rq.want)
		}
	})
	t.Run("HTTP/1.0 with keep-alive", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		for i := 0; i < 2; i++ {
			path := fmt.Sprintf("/m10/%d", i)
			resp, body := fc.roundTrip("GET", "GET "+path+" HTTP/1.0\r\nHost: mix.apps.io\r\nConnection: keep-alive\r\n\r\n")
			ftWantEcho(t, resp, body, "m GET "+path+" ")
		}
	})
}

// TestFrontBackendFraming: every way an app can delimit its response
// reaches the client intact, and the client connection stays in sync.
func TestFrontBackendFraming(t *testing.T) {
	b := newFtRaw(t, func(req *http.Request) (string, bool) {
		switch req.URL.Path {
		case "/cl":
			return "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Case: cl\r\n\r\nhello world", false
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n", false
		case "/chunked-ext":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5;name=value\r\nhello\r\n0\r\n\r\n", false
		case "/204":
			return "HTTP/1.1 204 No Content\r\nX-Case: 204\r\n\r\n", false
		case "/204-te": // an app that frames a 204 as chunked (it must not)
			return "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", false
		case "/304":
			// Content-Length on a 304 names the representation's size, not a body.
			return "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n", false
		case "/103":
			return "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints", false
		case "/eof":
			// Neither Content-Length nor chunked: the body ends when the app closes.
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until the app closes its connection", true
		case "/eof10":
			return "HTTP/1.0 200 OK\r\n\r\nhttp/1.0 body until close", true
		case "/empty":
			return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false
		default:
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		}
	})
	r, _ := routerWith(t, nil, map[string]common.Route{"fr.apps.io": route("fr", 0, be(b.addr, "ib", true))})

	// next proves the connection is still in sync after a response, unless
	// the router closed it.
	next := func(t *testing.T, fc *ftClient, prev *http.Response) {
		t.Helper()
		if prev.Close {
			fc.expectClosed()
			return
		}
		resp, body := fc.roundTrip("GET", ftReq("GET", "/ok", "fr.apps.io"))
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("next request on the connection: %d %q", resp.StatusCode, body)
		}
	}

	for _, tt := range []struct {
		name, path string
		headers    []string
		status     int
		body       string
		check      func(resp *http.Response) string // "" when the response is right
	}{
		{name: "Content-Length", path: "/cl", status: 200, body: "hello world", check: func(resp *http.Response) string {
			if resp.Header.Get("X-Case") != "cl" || resp.ContentLength != 11 {
				return fmt.Sprintf("X-Case %q, Content-Length %d, want the app's cl and 11", resp.Header.Get("X-Case"), resp.ContentLength)
			}
			return ""
		}},
		{name: "chunked with trailer", path: "/chunked", headers: []string{"TE: trailers"}, status: 200, body: "hello world",
			check: func(resp *http.Response) string {
				if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
					return fmt.Sprintf("trailer X-Checksum %q, want abc123 (trailer %v, header %v)", got, resp.Trailer, resp.Header)
				}
				return ""
			}},
		{name: "chunk extension", path: "/chunked-ext", status: 200, body: "hello"},
		{name: "204 No Content", path: "/204", status: 204, check: func(resp *http.Response) string {
			if resp.Header.Get("X-Case") != "204" {
				return fmt.Sprintf("header %v", resp.Header)
			}
			return ""
		}},
		{name: "304 Not Modified with Content-Length", path: "/304", headers: []string{`If-None-Match: "v1"`}, status: 304,
			check: func(resp *http.Response) string {
				if resp.Header.Get("ETag") != `"v1"` {
					return fmt.Sprintf("header %v", resp.Header)
				}
				return ""
			}},
		{name: "103 Early Hints then 200", path: "/103", status: 200, body: "hints"},
		{name: "empty Content-Length body", path: "/empty", status: 200},
		{name: "body delimited by close /eof", path: "/eof", status: 200, body: "body until the app closes its connection"},
		{name: "body delimited by close /eof10", path: "/eof10", status: 200, body: "http/1.0 body until close"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := ftDial(t, r.Addr())
			resp, body := fc.roundTrip("GET", ftReq("GET", tt.path, "fr.apps.io", tt.headers...))
			if resp.StatusCode != tt.status || body != tt.body {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if tt.check != nil {
				if msg := tt.check(resp); msg != "" {
					t.Error(msg)
				}
			}
			next(t, fc, resp)
		})
	}
	t.Run("204 framed as chunked by the app", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		fc.send(ftReq("GET", "/204-te", "fr.apps.io"))
		head, err := fc.br.ReadString('\n')
		for err == nil && !strings.HasSuffix(head, "\r\n\r\n") {
			var line string
			line, err = fc.br.ReadString('\n')
			head += line
		}
		if err != nil || !strings.HasPrefix(head, "HTTP/1.1 204") || strings.Contains(strings.ToLower(head), "transfer-encoding") {
			t.Fatalf("head %q, %v: a 204 must reach the client without Transfer-Encoding", head, err)
		}
		resp, body := fc.roundTrip("GET", ftReq("GET", "/cl", "fr.apps.io"))
		if resp.StatusCode != 200 || body == "" {
			t.Fatalf("next request: %d %q", resp.StatusCode, body)
		}
	})
}

// TestFrontLargeBodies: a MiB with Content-Length and a MiB chunked arrive
// byte-exact, one after the other on one connection.
func TestFrontLargeBodies(t *testing.T) {
	const size = 1 << 20
	payload := make([]byte, size)
	rand.NewChaCha8([32]byte{1, 2, 3}).Read(payload) // not periodic: a shifted or repeated block shows
	want := sha256.Sum256(payload)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cl":
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Write(payload)
		case "/chunked":
			for off := 0; off < size; off += 50000 { // uneven pieces, flushed: chunked on the wire
				w.Write(payload[off:min(off+50000, size)])
				w.(http.Flusher).Flush()
			}
		default:
			io.WriteString(w, "small")
		}
	}))
	t.Cleanup(s.Close)
	r, _ := routerWith(t, nil, map[string]common.Route{"big.apps.io": route("big", 0, be(s.Listener.Addr().String(), "ib", true))})
	fc := ftDial(t, r.Addr())
	fc.c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, path := range []string{"/cl", "/chunked", "/cl"} {
		resp, body := fc.roundTrip("GET", ftReq("GET", path, "big.apps.io"))
		if resp.StatusCode != 200 || len(body) != size || sha256.Sum256([]byte(body)) != want {
			t.Fatalf("%s: status %d, %d bytes, sha256 match %v", path, resp.StatusCode, len(body), sha256.Sum256([]byte(body)) == want)
		}
		if path == "/cl" && resp.ContentLength != size {
			t.Errorf("%s: Content-Length %d, want %d", path, resp.ContentLength, size)
		}
	}
	resp, body := fc.roundTrip("GET", ftReq("GET", "/small", "big.apps.io"))
	if resp.StatusCode != 200 || body != "small" {
		t.Fatalf("after large bodies: %d %q", resp.StatusCode, body)
	}
}

// TestFrontLargeRequestHead: a 20 KB cookie and a long URL are proxied intact.
func TestFrontLargeRequestHead(t *testing.T) {
	e := newFtEcho(t, "h")
	r, _ := routerWith(t, nil, map[string]common.Route{"head.apps.io": route("head", 0, be(e.addr(), "ih", true))})
	cookie := "big=" + strings.Repeat("c", 20<<10)
	path := "/long?q=" + strings.Repeat("p", 6000)
	fc := ftDial(t, r.Addr())
	for i := 0; i < 2; i++ { // twice: the connection survives a large head
		resp, body := fc.roundTrip("GET", ftReq("GET", path, "head.apps.io", "Cookie: "+cookie, "X-After-Cookie: yes"))
		ftWantEcho(t, resp, body, "h GET "+path+" ")
		got, _ := e.request(t, path)
		if got.Header.Get("Cookie") != cookie || got.Header.Get("X-After-Cookie") != "yes" {
			t.Fatalf("request %d: backend saw Cookie of %d bytes (want %d), X-After-Cookie %q",
				i, len(got.Header.Get("Cookie")), len(cookie), got.Header.Get("X-After-Cookie"))
		}
	}
	// Many headers rather than one large one.
	var hs []string
	for i := 0; i < 200; i++ {
		hs = append(hs, fmt.Sprintf("X-Many-%d: %s", i, strings.Repeat("v", 100)))
	}
	resp, body := fc.roundTrip("GET", ftReq("GET", "/many", "head.apps.io", hs...))
	ftWantEcho(t, resp, body, "h GET /many ")
	got, _ := e.request(t, "/many")
	for i := 0; i < 200; i++ {
		if v := got.Header.Get(fmt.Sprintf("X-Many-%d", i)); v != strings.Repeat("v", 100) {
			t.Fatalf("X-Many-%d = %q", i, v)
		}
	}
}

// TestFrontHTTP10: HTTP/1.0 clients are answered, and close-delimited by
// default; without Host they get a 400.
func TestFrontHTTP10(t *testing.T) {
	e := newFtEcho(t, "o")
	r, _ := routerWith(t, nil, map[string]common.Route{"old.apps.io": route("old", 0, be(e.addr(), "io", true))})

	t.Run("without Host", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		resp, body := fc.roundTrip("GET", "GET /nohost HTTP/1.0\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("HTTP/1.0 without Host: %d %q, want 400", resp.StatusCode, body)
		}
		if e.hits.Load() != 0 {
			t.Fatalf("a request without Host reached the app")
		}
	})
	t.Run("with Host", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		resp, body := fc.roundTrip("GET", "GET /old HTTP/1.0\r\nHost: old.apps.io\r\n\r\n")
		ftWantEcho(t, resp, body, "o GET /old ")
		if got, _ := e.request(t, "/old"); got.Host != "old.apps.io" {
			t.Fatalf("backend saw Host %q", got.Host)
		}
		fc.expectClosed() // HTTP/1.0 without keep-alive: one request per connection
	})
	t.Run("HEAD", func(t *testing.T) {
		fc := ftDial(t, r.Addr())
		resp, body := fc.roundTrip("HEAD", "HEAD /old-head HTTP/1.0\r\nHost: old.apps.io\r\n\r\n")
		if resp.StatusCode != 200 || body != "" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		fc.expectClosed()
	})
}

// TestFrontMalformedRequests: requests a server must reject get a 400 (505
// for an HTTP version it does not speak), never reach the app, and end the
// connection: the stream cannot be trusted past them.
func TestFrontMalformedRequests(t *testing.T) {
	e := newFtEcho(t, "x")
	r, _ := routerWith(t, nil, map[string]common.Route{"bad.apps.io": route("bad", 0, be(e.addr(), "ix", true))})
	for _, tt := range []struct {
		name, raw string
		status    []int
	}{
		{"bad request line", "GARBAGE\r\n\r\n", []int{400}},
		{"request line without version", "GET /\r\nHost: bad.apps.io\r\n\r\n", []int{400}},
		{"unknown HTTP version", "GET / HTTP/9.9\r\nHost: bad.apps.io\r\n\r\n", []int{400, 505}},
		{"header without colon", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nNoColonHere\r\n\r\n", []int{400}},
		{"space before colon", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nX-Foo : bar\r\n\r\n", []int{400}},
		{"space in header name", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nX Foo: bar\r\n\r\n", []int{400}},
		{"missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nX-Foo: bar\r\n\r\n", []int{400}},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nHost: other.apps.io\r\n\r\n", []int{400}},
		{"conflicting Content-Lengths", "POST / HTTP/1.1\r\nHost: bad.apps.io\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", []int{400}},
		{"non-numeric Content-Length", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nContent-Length: abc\r\n\r\n", []int{400}},
		{"negative Content-Length", "GET / HTTP/1.1\r\nHost: bad.apps.io\r\nContent-Length: -1\r\n\r\n", []int{400}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.hits.Load()
			fc := ftDial(t, r.Addr())
			resp, body := fc.roundTrip("GET", tt.raw)
			if !slices.Contains(tt.status, resp.StatusCode) {
				t.Errorf("%q: status %d %q, want %v", tt.raw, resp.StatusCode, body, tt.status)
			}
			if n := e.hits.Load() - before; n != 0 {
				t.Errorf("%q reached the app %d times", tt.raw, n)
			}
			fc.expectClosed()
		})
	}
}

// TestFrontRequestSmuggling: a request with both Content-Length and
// Transfer-Encoding — the shape of request smuggling — is refused with a
// 400, never reaches the app, and ends the connection.
func TestFrontRequestSmuggling(t *testing.T) {
	e := newFtEcho(t, "x")
	r, _ := routerWith(t, nil, map[string]common.Route{"smug.apps.io": route("smug", 0, be(e.addr(), "ix", true))})
	for _, method := range []string{"POST", "GET"} {
		t.Run(method, func(t *testing.T) {
			before := e.hits.Load()
			fc := ftDial(t, r.Addr())
			// Framed by Content-Length, the body is "0\r\n\r\nG" and the next request
			// starts "ET /smuggled"; framed by chunked, the next one is "GET /smuggled".
			raw := method + " / HTTP/1.1\r\nHost: smug.apps.io\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				ftReq("GET", "/smuggled", "smug.apps.io")
			resp, body := fc.roundTrip(method, raw)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d %q, want 400", resp.StatusCode, body)
			}
			if n := e.hits.Load() - before; n != 0 {
				t.Errorf("reached the app %d times (saw %v)", n, e.uriList())
			}
			fc.expectClosed()
		})
	}
}

// ftMalformedBackend serves answers by path (closing after each) and a
// healthy "fine" at any other path, behind a router at mal.apps.io.
func ftMalformedBackend(t *testing.T, answers map[string]string) *Router {
	t.Helper()
	b := newFtRaw(t, func(req *http.Request) (string, bool) {
		if raw, ok := answers[req.URL.Path]; ok {
			return raw, true
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine", false
	})
	r, _ := routerWith(t, nil, map[string]common.Route{"mal.apps.io": route("mal", 0, be(b.addr, "ib", true))})
	return r
}

// ftCheckBadAnswer asks path and requires the router's 502 endpoint_failure,
// with no header the app smuggled in and no control character in any value,
// then a working request on the same connection. lenientOK, when not nil,
// accepts a 200 instead if it approves of the response.
func ftCheckBadAnswer(t *testing.T, r *Router, path string, lenientOK func(*http.Response, string) bool) {
	t.Helper()
	fc := ftDial(t, r.Addr())
	fc.send(ftReq("GET", path, "mal.apps.io"))
	resp, err := http.ReadResponse(fc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("client could not parse the router's answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k, vs := range resp.Header {
		if strings.EqualFold(k, "Injected") || strings.ContainsAny(k, " \t") {
			t.Errorf("client got a header the app smuggled in: %q: %q", k, vs)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Errorf("client got a header value with a control character: %s: %q", k, v)
			}
		}
	}
	switch {
	case resp.StatusCode == http.StatusBadGateway && resp.Header.Get(HeaderRouterError) == ErrEndpointFailure:
		if !strings.Contains(string(body), ErrEndpointFailure) {
			t.Errorf("502 body %q is not the router's", body)
		}
	case lenientOK != nil && resp.StatusCode == http.StatusOK && lenientOK(resp, string(body)):
	default:
		t.Fatalf("status %d %s=%q body %q, want 502 %s", resp.StatusCode, HeaderRouterError,
			resp.Header.Get(HeaderRouterError), body, ErrEndpointFailure)
	}
	// The router's own error keeps the client connection usable.
	resp2, body2 := fc.roundTrip("GET", ftReq("GET", "/fine", "mal.apps.io"))
	if resp2.StatusCode != 200 || body2 != "fine" {
		t.Fatalf("after the bad answer: %d %q", resp2.StatusCode, body2)
	}
}

// TestFrontMalformedBackendResponse: an app's unparseable answer becomes the
// router's 502, and nothing the app smuggled into its head reaches the client.
func TestFrontMalformedBackendResponse(t *testing.T) {
	answers := map[string]string{
		"/no-colon":     "HTTP/1.1 200 OK\r\nBad Header Line\r\nContent-Length: 2\r\n\r\nok",
		"/bad-status":   "HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
		"/not-http":     "SSH-2.0-OpenSSH_9.6\r\n\r\n",
		"/bad-length":   "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\nok",
		"/two-lengths":  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"/bare-cr":      "HTTP/1.1 200 OK\r\nX-A: a\rInjected: b\r\nContent-Length: 2\r\n\r\nok",
		"/nul-in-value": "HTTP/1.1 200 OK\r\nX-A: a\x00Injected: b\r\nContent-Length: 2\r\n\r\nok",
		"/space-colon":  "HTTP/1.1 200 OK\r\nX-Foo : bar\r\nContent-Length: 2\r\n\r\nok",
	}
	r := ftMalformedBackend(t, answers)
	for path := range answers {
		t.Run(path, func(t *testing.T) {
			var lenient func(*http.Response, string) bool
			if path == "/space-colon" {
				// RFC 9112 5.1: a proxy must remove the whitespace before
				// forwarding; dropping the header is safe too. A name with a
				// space is caught above.
				lenient = func(resp *http.Response, body string) bool {
					foo, ok := resp.Header["X-Foo"]
					return body == "ok" && (!ok || slices.Equal(foo, []string{"bar"}))
				}
			}
			ftCheckBadAnswer(t, r, path, lenient)
		})
	}
}

// TestFrontBackendBareLF: a bare LF inside an app's header value does not
// split it into a header the app did not mean to send: the client gets the
// router's 502 and never a header named Injected.
func TestFrontBackendBareLF(t *testing.T) {
	r := ftMalformedBackend(t, map[string]string{
		"/bare-lf": "HTTP/1.1 200 OK\r\nX-A: a\nInjected: b\r\nContent-Length: 2\r\n\r\nok",
	})
	ftCheckBadAnswer(t, r, "/bare-lf", nil)
}

// TestFrontConcurrentKeepAlive: many keep-alive clients at once each get
// their own answers, spread over both backends.
func TestFrontConcurrentKeepAlive(t *testing.T) {
	a, b := newFtEcho(t, "a"), newFtEcho(t, "b")
	r, _ := routerWith(t, nil, map[string]common.Route{"many.apps.io": route("many", 0, be(a.addr(), "ia", true), be(b.addr(), "ib", true))})
	const clients, perClient = 32, 50
	errc := make(chan error, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Go(func() {
			errc <- func() error {
				c, err := net.DialTimeout("tcp", r.Addr(), 2*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(8 * time.Second))
				br := bufio.NewReader(c)
				for j := 0; j < perClient; j++ {
					path := fmt.Sprintf("/c%d/r%d", i, j)
					raw := ftReq("GET", path, "many.apps.io")
					if j%10 == 9 { // some pipelined pairs too
						raw += ftReq("GET", path+"/p", "many.apps.io")
					}
					if _, err := io.WriteString(c, raw); err != nil {
						return err
					}
					for k, p := range []string{path, path + "/p"} {
						if k == 1 && j%10 != 9 {
							break
						}
						resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
						if err != nil {
							return fmt.Errorf("client %d request %s: %w", i, p, err)
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						name := resp.Header.Get("X-Backend")
						if err != nil || resp.StatusCode != 200 || string(body) != name+" GET "+p+" " {
							return fmt.Errorf("client %d request %s: %d %q (backend %q) %v", i, p, resp.StatusCode, body, name, err)
						}
					}
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	if a.hits.Load() == 0 || b.hits.Load() == 0 {
		t.Fatalf("hits a=%d b=%d: both backends should serve", a.hits.Load(), b.hits.Load())
	}
	if total := a.hits.Load() + b.hits.Load(); total != clients*(perClient+perClient/10) {
		t.Fatalf("backends saw %d requests, want %d", total, clients*(perClient+perClient/10))
	}
}

// TestFrontClientGone: a client that hangs up while its app is slow frees
// the backend connection (the app sees its request cancelled) and is never
// retried on another instance.
func TestFrontClientGone(t *testing.T) {
	var inFlight atomic.Int64
	cancelled := make(chan struct{}, 4)
	slow := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inFlight.Add(1)
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		}))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	// A response timeout longer than the test: only noticing the client can end the wait.
	r, _ := routerWith(t, func(c *Config) { c.ResponseTimeout = time.Minute },
		map[string]common.Route{"gone.apps.io": route("gone", 0, be(slow("a"), "ia", true), be(slow("b"), "ib", true))})
	fc := ftDial(t, r.Addr())
	fc.send(ftReq("GET", "/slow", "gone.apps.io"))
	testenv.WaitFor(t, "request at the app", 5*time.Second, func() bool { return inFlight.Load() == 1 })
	fc.c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the app's request was not cancelled after the client left")
	}
	time.Sleep(300 * time.Millisecond) // a wrong retry would show up as a second request
	if n := inFlight.Load(); n != 1 {
		t.Fatalf("%d requests reached the apps, want 1 (no retry for a client that left)", n)
	}
}

// TestFrontSlowBackendPipelined: while a slow answer is awaited the front
// watches the client; a request pipelined meanwhile is kept and answered
// next, in order.
func TestFrontSlowBackendPipelined(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2 * watchAfter)
		}
		fmt.Fprint(w, r.URL.Path)
	}))
	t.Cleanup(s.Close)
	r, _ := routerWith(t, nil, map[string]common.Route{"pipe.apps.io": route("pipe", 0, be(s.Listener.Addr().String(), "ip", true))})
	fc := ftDial(t, r.Addr())
	fc.send(ftReq("GET", "/slow", "pipe.apps.io"))
	time.Sleep(watchAfter + 50*time.Millisecond) // the watch has started and is reading the connection
	fc.send(ftReq("GET", "/next", "pipe.apps.io"))
	for _, want := range []string{"/slow", "/next"} {
		if resp, body := fc.read("GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// TestFrontSlowReader: a client that reads nothing of a large answer is
// dropped after ClientWriteTimeout, and so is the app's connection (the
// app's write fails instead of hanging).
func TestFrontSlowReader(t *testing.T) {
	appErr := make(chan error, 1)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 1024; i++ { // 64 MiB, far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				appErr <- err
				return
			}
		}
		appErr <- nil
	}))
	t.Cleanup(s.Close)
	r, _ := routerWith(t, func(c *Config) { c.ClientWriteTimeout = 300 * time.Millisecond },
		map[string]common.Route{"slow.apps.io": route("slow", 0, be(s.Listener.Addr().String(), "is", true))})
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	fmt.Fprint(c, ftReq("GET", "/big", "slow.apps.io"))
	select {
	case err := <-appErr:
		if err == nil {
			t.Fatal("the app wrote 64 MiB to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the app's write still blocked 10 s after the client stopped reading")
	}
}

// TestFrontUnsolicitedBytes: an app that sends more than its response frames
// does not get the extra bytes read as the answer to the next request.
func TestFrontUnsolicitedBytes(t *testing.T) {
	var conns atomic.Int64
	extraSent := make(chan struct{}, 1)
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
			n := conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body := fmt.Sprintf("conn %d %s", n, req.URL.Path)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					if req.URL.Path == "/extra" {
						fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforgd")
						extraSent <- struct{}{}
					}
				}
			}()
		}
	}()
	r, _ := routerWith(t, nil, map[string]common.Route{"extra.apps.io": route("extra", 0, be(ln.Addr().String(), "ie", true))})
	fc := ftDial(t, r.Addr())
	if resp, body := fc.roundTrip("GET", ftReq("GET", "/extra", "extra.apps.io")); resp.StatusCode != 200 || !strings.HasSuffix(body, " /extra") {
		t.Fatalf("first answer %d %q", resp.StatusCode, body)
	}
	// Written on loopback: the extra bytes wait in the router's socket.
	select {
	case <-extraSent:
	case <-time.After(5 * time.Second):
		t.Fatal("the app did not send its extra bytes")
	}
	if resp, body := fc.roundTrip("GET", ftReq("GET", "/next", "extra.apps.io")); resp.StatusCode != 200 || !strings.HasSuffix(body, " /next") {
		t.Fatalf("second answer %d %q, want the app's answer to /next", resp.StatusCode, body)
	}
}
