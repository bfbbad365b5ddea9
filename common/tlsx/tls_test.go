package tlsx_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dinp/dinp/common/tlsx"
)

// TestListenTLS: a listener given a certificate from scripts/pki.sh serves
// TLS to a client that trusts the private CA (--ca), refuses a client that
// does not, and answers plain HTTP with a clear 400.
func TestListenTLS(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("../../scripts/pki.sh", dir, "server", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("pki.sh: %v %s", err, out)
	}
	ln, err := tlsx.Listen("127.0.0.1:0", filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over tls") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	cfg, err := tlsx.ClientTLS(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := trusting.Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("client with the CA: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over tls" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("answer %q over %+v", body, resp.TLS)
	}

	if _, err := (&http.Client{Transport: &http.Transport{}}).Get("https://" + addr + "/"); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without the CA: %v", err)
	}
	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP: %d %q", resp.StatusCode, body)
	}

	if _, err := tlsx.Listen("127.0.0.1:0", filepath.Join(dir, "server.pem"), ""); err == nil {
		t.Fatal("a certificate without its key accepted")
	}
}
