package main

import (
	"crypto/tls"
	"io"
	"net"
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

// TestClusterACME: with --acme-directory on the servers, a custom domain
// bound through the API gets its certificate from the ACME CA (pebble)
// with no operator step: the router serves it by SNI, a browser's check
// passes, and the API lists it issued with its issuer and expiry.
func TestClusterACME(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir, "dinp", ".")
	c := clusterStart(t, bin, clusterOptions{ACME: true})
	if err := c.api("POST", "/api/v1/apps", strings.NewReader(`{"name":"shop"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	// An admin binds at once (a team would prove ownership first).
	if err := c.api("POST", "/api/v1/apps/shop/domains", strings.NewReader(`{"name":"shop.example.com"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	roots := c.acme.Roots(t)
	c.waitFor(90*time.Second, "the router serves the domain's ACME certificate", func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.routerTLS,
			&tls.Config{ServerName: "shop.example.com", RootCAs: roots})
		if err != nil {
			return err
		}
		return conn.Close()
	})
	var out struct {
		Domains []struct {
			Name        string
			Certificate *struct {
				State     string
				Issuer    string
				ExpiresAt *time.Time `json:"expires_at"`
			}
		}
	}
	if err := c.api("GET", "/api/v1/apps/shop/domains", nil, "", &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Domains) != 1 || out.Domains[0].Certificate == nil || out.Domains[0].Certificate.State != "issued" ||
		!strings.Contains(out.Domains[0].Certificate.Issuer, "Pebble") || out.Domains[0].Certificate.ExpiresAt == nil {
		t.Fatalf("domains: %+v", out.Domains)
	}
}
