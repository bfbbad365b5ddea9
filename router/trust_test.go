package router

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
)

// TestUntrustedForwardingHeaders plays a client that claims to be behind
// TLS, to have arrived long ago and to come from another address: with no
// trusted proxy configured, the app sees what the router saw, on both proxy
// paths (a GET on the front, a POST handed to net/http); from a trusted
// proxy the same headers pass.
func TestUntrustedForwardingHeaders(t *testing.T) {
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
			r, _ := routerWith(t, func(c *Config) { c.TrustedProxies = tc.trusted },
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
}
