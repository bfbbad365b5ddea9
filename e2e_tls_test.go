package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterTLS: a multi-process cluster whose servers, builder, registry
// and dash serve TLS with certificates of a private CA (scripts/pki.sh):
// agents heartbeat over it, dash uploads builds over it, the builder pushes
// over it, nodes pull over it, the API is served over it, and an app
// deploys and answers; plain HTTP and a client that does not trust the CA
// are refused by every one of those listeners.
func TestClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir, "dinp", ".")
	c := clusterStart(t, bin, clusterOptions{TLS: true})
	c.createAndDeploy("hello", 2, helloTarball(t))

	listeners := map[string]string{"dash": c.dash + "/api/v1/health", "builder": c.builder + "/health",
		"registry": c.registry + "/v2/"}
	for i, addr := range c.servers {
		listeners["server-"+string(rune('1'+i))] = addr + "/health"
	}
	for name, target := range listeners {
		resp, err := http.Get("http://" + target)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
			t.Fatalf("plain HTTP to %s (%s): %d %q", name, target, resp.StatusCode, body)
		}
		if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + target); err == nil ||
			!strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a client without the CA reached %s (%s): %v", name, target, err)
		}
		resp, err = c.serverClient.Get("https://" + target)
		if err != nil {
			t.Fatalf("a client with the CA could not reach %s: %v", name, err)
		}
		resp.Body.Close()
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

// TestUpTLS: `dinp up --tls-cert --tls-key --ca` serves the server,
// builder, registry and dash listeners over TLS, its components reach each
// other over it (agent heartbeats, dash → builder uploads, builder →
// registry pushes, node pulls) and an app deploys and answers through the
// router; plain HTTP to dash is refused.
func TestUpTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	pki := filepath.Join(t.TempDir(), "pki")
	if out, err := exec.Command("scripts/pki.sh", pki, "platform", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("pki.sh: %v %s", err, out)
	}
	p := startPlatform(t, "--tls-cert", filepath.Join(pki, "platform.pem"), "--tls-key", filepath.Join(pki, "platform-key.pem"),
		"--ca", filepath.Join(pki, "ca.pem"))
	if p.dashTLS == nil {
		t.Fatal("dash is not reached over TLS")
	}
	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(`{"name":"hello","instances":1,"memory_mb":64,"health_path":"/healthz"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.api("POST", "/api/v1/apps/hello/deploy", bytes.NewReader(helloTarball(t)), "application/gzip", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the app answering through the router", func() error {
		_, err := p.get("hello")
		return err
	})
	resp, err := http.Get("http://" + p.dash + "/api/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP to dash: %d %q", resp.StatusCode, body)
	}
}
