package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClusterTLS: a multi-process cluster whose servers and builder serve
// TLS with certificates of a private CA (scripts/pki.sh): agents heartbeat
// over it, dash uploads builds over it, an app deploys and answers; plain
// HTTP and a client that does not trust the CA are refused.
func TestClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir, "dinp", ".")
	c := clusterStart(t, bin, clusterOptions{TLS: true})
	c.createAndDeploy("hello", 2, helloTarball(t))

	for _, addr := range c.servers {
		resp, err := http.Get("http://" + addr + "/v1/heartbeat")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
			t.Fatalf("plain HTTP to the server %s: %d %q", addr, resp.StatusCode, body)
		}
		if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + addr + "/health"); err == nil ||
			!strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a client without the CA reached %s: %v", addr, err)
		}
	}
	if _, err := c.leader(); err != nil {
		t.Fatal(err)
	}
}
