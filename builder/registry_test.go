package builder

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

func TestParseRegistryAddr(t *testing.T) {
	tests := []struct {
		in, scheme, addr, err string
	}{
		{in: "127.0.0.1:5000", addr: "127.0.0.1:5000"},
		{in: "https://10.0.0.5:5000", scheme: "https", addr: "10.0.0.5:5000"},
		{in: "http://registry.internal", scheme: "http", addr: "registry.internal"},
		{in: "https://10.0.0.5:5000/", scheme: "https", addr: "10.0.0.5:5000"},
		{in: "10.0.0.5:5000/v2", err: "without path"},
		{in: "https://10.0.0.5:5000/v2", err: "want https://host[:port]"},
		{in: "ftp://10.0.0.5", err: "scheme must be http or https"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			scheme, addr, err := parseRegistryAddr(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || scheme != tt.scheme || addr != tt.addr {
				t.Fatalf("= %q, %q, %v; want %q, %q", scheme, addr, err, tt.scheme, tt.addr)
			}
		})
	}
}

// TestRegistryClientTLS: a registry serving TLS on a loopback address (where
// go-containerregistry would speak plain HTTP) is pushed to and read over
// TLS by a client that trusts its CA; a client configured for plain HTTP
// gets an error that says how to fix it.
func TestRegistryClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(256, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	rc, err := newRegistryClient(addr, true, ca, "dinp", "secret")
	if err != nil {
		t.Fatal(err)
	}
	d, err := rc.push(ctx, addr+"/app:build-1", img)
	if err != nil {
		t.Fatalf("push over TLS: %v", err)
	}
	if size, err := rc.size(ctx, addr+"/app@"+d.String()); err != nil || size <= 512 {
		t.Fatalf("size over TLS: %d, %v", size, err)
	}
	if desc, err := rc.head(ctx, addr+"/app:build-1"); err != nil || desc.Digest != d {
		t.Fatalf("head over TLS: %v, %v", desc, err)
	}
	if err := rc.delete(ctx, addr+"/app@"+d.String()); err != nil {
		t.Fatalf("delete over TLS: %v", err)
	}

	plain, err := newRegistryClient(addr, false, "", "dinp", "secret")
	if err != nil {
		t.Fatal(err)
	}
	_, err = plain.push(ctx, addr+"/app:build-2", img)
	if err == nil || !strings.Contains(err.Error(), "serves TLS: give the builder --ca") {
		t.Fatalf("plain HTTP push to a TLS registry: %v", err)
	}
}

// TestRegistryClientNoDowngrade: a builder configured for a TLS registry
// never falls back to plain HTTP (go-containerregistry would, for a
// loopback or private address, sending the registry password in clear).
func TestRegistryClientNoDowngrade(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := newRegistryClient(addr, true, "", "dinp", "secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.push(context.Background(), addr+"/app:build-1", img); err == nil {
		t.Fatal("a client configured for TLS pushed over plain HTTP")
	}
}
