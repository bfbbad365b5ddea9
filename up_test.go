package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpTLSFlags: `dinp up --tls-cert --tls-key --ca` gives the server,
// builder, registry and dash listeners the certificate and makes the
// components reach each other over https; half a configuration is refused.
func TestUpTLSFlags(t *testing.T) {
	pki := filepath.Join(t.TempDir(), "pki")
	if out, err := exec.Command("scripts/pki.sh", pki, "platform", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("pki.sh: %v %s", err, out)
	}
	cert, key, ca := filepath.Join(pki, "platform.pem"), filepath.Join(pki, "platform-key.pem"), filepath.Join(pki, "ca.pem")
	tests := []struct {
		name            string
		cert, key, ca   string
		scheme, wantErr string
	}{
		{name: "plain", scheme: "http"},
		{name: "tls", cert: cert, key: key, ca: ca, scheme: "https"},
		{name: "cert without key", cert: cert, ca: ca, wantErr: "go together"},
		{name: "cert without ca", cert: cert, key: key, wantErr: "needs --ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := upConfig{tlsCert: tt.cert, tlsKey: tt.key}
			c.base.CA = tt.ca
			c.registry.Addr, c.builder.Addr, c.server.Addr = "127.0.0.1:5000", "127.0.0.1:7788", "127.0.0.1:1980"
			scheme, err := c.applyTLS()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || scheme != tt.scheme {
				t.Fatalf("= %q, %v; want %q", scheme, err, tt.scheme)
			}
			c.wire(scheme)
			for name, got := range map[string][2]string{
				"server": {c.server.TLSCert, c.server.TLSKey}, "builder": {c.builder.TLSCert, c.builder.TLSKey},
				"registry": {c.registry.TLSCert, c.registry.TLSKey}, "dash": {c.dash.TLSCert, c.dash.TLSKey},
			} {
				if got != [2]string{tt.cert, tt.key} {
					t.Errorf("%s listener: %v, want %s %s", name, got, tt.cert, tt.key)
				}
			}
			if c.agent.ServerURL != scheme+"://127.0.0.1:1980" || c.dash.BuilderURL != scheme+"://127.0.0.1:7788" ||
				c.builder.RegistryAddr != scheme+"://127.0.0.1:5000" || c.builder.RegistryHost != "127.0.0.1:5000" {
				t.Errorf("clients: agent %s, dash → builder %s, builder → registry %s (host %s)",
					c.agent.ServerURL, c.dash.BuilderURL, c.builder.RegistryAddr, c.builder.RegistryHost)
			}
			if c.agent.CA != tt.ca || c.builder.CA != tt.ca || c.dash.Base.CA != tt.ca {
				t.Errorf("components' CA: agent %q builder %q dash %q", c.agent.CA, c.builder.CA, c.dash.Base.CA)
			}
		})
	}
}
