package router

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

const limitsHost = "limits.apps.io"

// rawClient is one client connection speaking HTTP/1.1 by hand.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{c: c, br: bufio.NewReader(c)}
}

// do sends raw and reads one answer (5 s at most).
func (rc *rawClient) do(raw string) (*http.Response, string, error) {
	rc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(rc.c, raw); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return nil, "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), nil
}

const (
	rawGET  = "GET /x HTTP/1.1\r\nHost: " + limitsHost + "\r\n\r\n"
	rawPOST = "POST /x HTTP/1.1\r\nHost: " + limitsHost + "\r\nContent-Length: 4\r\n\r\nbody"
)

// TestConnsPerAddr: a client address gets MaxConnsPerAddr connections,
// whichever path serves them (the front's GET, net/http's POST, one that
// sent nothing yet); the next is refused with a 503, and closing either
// kind frees its place.
func TestConnsPerAddr(t *testing.T) {
	app := newBackend(t, "a")
	r, _ := routerWith(t, func(c *Config) { c.MaxConnsPerAddr = 3 },
		map[string]common.Route{limitsHost: route("limits", 1, be(app.addr(), "i1", true))})
	fast, handed := dialRaw(t, r.Addr()), dialRaw(t, r.Addr())
	dialRaw(t, r.Addr()) // connected, silent
	for name, x := range map[string]struct {
		c   *rawClient
		req string
	}{"front GET": {fast, rawGET}, "net/http POST": {handed, rawPOST}} {
		if resp, body, err := x.c.do(x.req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v %q", name, resp, err, body)
		}
	}
	over := func() bool {
		resp, _, err := dialRaw(t, r.Addr()).do(rawGET)
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderRouterError) != ErrTooManyConns {
			t.Fatalf("refusal without %s: %v", ErrTooManyConns, resp.Header)
		}
		return err == nil && resp.StatusCode == http.StatusServiceUnavailable
	}
	if !over() {
		t.Fatal("a 4th connection was served; want 503 too_many_connections")
	}
	for _, c := range []*rawClient{handed, fast} {
		c.c.Close()
		// The freed place is taken by a new connection that stays open.
		var next *rawClient
		testenv.WaitFor(t, "a place after a close", 5*time.Second, func() bool {
			next = dialRaw(t, r.Addr())
			resp, _, err := next.do(rawGET)
			return err == nil && resp.StatusCode == 200
		})
		if !over() {
			t.Fatal("over the cap again, yet served")
		}
	}
}

// TestBodyIdleTimeout: a client that stops sending its body is cut with a
// 408 after BodyIdleTimeout — on a connection handed over at its first
// request and on one that the front served first — while a slow body that
// keeps moving goes through.
func TestBodyIdleTimeout(t *testing.T) {
	app := newBackend(t, "a")
	r, _ := routerWith(t, func(c *Config) { c.BodyIdleTimeout = 300 * time.Millisecond },
		map[string]common.Route{limitsHost: route("limits", 1, be(app.addr(), "i1", true))})
	stalled := "POST /x HTTP/1.1\r\nHost: " + limitsHost + "\r\nContent-Length: 100\r\n\r\nonly a part"
	for _, first := range []string{"", rawGET} {
		name := map[string]string{"": "handed over at once", rawGET: "after a front GET"}[first]
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, r.Addr())
			if first != "" {
				if resp, _, err := c.do(first); err != nil || resp.StatusCode != 200 {
					t.Fatalf("first request: %v %v", resp, err)
				}
			}
			start := time.Now()
			resp, body, err := c.do(stalled)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get(HeaderRouterError) != ErrBodyTimeout {
				t.Fatalf("stalled body: %d %v %q, want 408 %s", resp.StatusCode, resp.Header, body, ErrBodyTimeout)
			}
			t.Logf("cut after %v", time.Since(start))
		})
	}
	t.Run("slow body that keeps moving", func(t *testing.T) {
		c := dialRaw(t, r.Addr())
		c.c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c.c, "POST /x HTTP/1.1\r\nHost: "+limitsHost+"\r\nContent-Length: 5\r\n\r\n")
		for _, b := range "slow!" {
			time.Sleep(100 * time.Millisecond) // pacing the client, not waiting for the router
			io.WriteString(c.c, string(b))
		}
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "slow!") {
			t.Fatalf("slow body: %d %q", resp.StatusCode, body)
		}
	})
}
