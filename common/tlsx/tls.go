// Package tlsx serves and trusts TLS between dinp components: listeners
// from a certificate and key, and a private CA for clients.
package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
)

// Listen opens addr for a platform listener: TLS with the certificate and
// key files when both are set, plain TCP when neither is. A plain HTTP
// request on a TLS listener gets net/http's 400 "Client sent an HTTP
// request to an HTTPS server."
func Listen(addr, certFile, keyFile string) (net.Listener, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tls-cert and tls-key go together")
	}
	var cfg *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load tls certificate: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return ln, nil
	}
	return tls.NewListener(ln, cfg), nil
}

// ClientTLS is the TLS configuration of a client that trusts the private
// CA in caFile besides the system's roots.
func ClientTLS(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

var trustMu sync.Mutex

// TrustCA makes this process's default HTTP transport (and tr, each of the
// given transports, e.g. a library's own default) trust the private CA in
// caFile: every client of a component reaches the platform's TLS listeners
// with it. It is process-wide on purpose: `--ca` names the platform's CA.
func TrustCA(caFile string, tr ...*http.Transport) error {
	cfg, err := ClientTLS(caFile)
	if err != nil {
		return err
	}
	trustMu.Lock()
	defer trustMu.Unlock()
	if def, ok := http.DefaultTransport.(*http.Transport); ok {
		def.TLSClientConfig = cfg
	}
	for _, t := range tr {
		t.TLSClientConfig = cfg.Clone()
	}
	return nil
}
