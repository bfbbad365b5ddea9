package router

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// TLSCert is one certificate/key pair (PEM files) served on TLSAddr for the
// names it carries (its DNS SANs, including wildcards like *.apps.io).
type TLSCert struct {
	CertFile string
	KeyFile  string
}

// parseTLSCert parses the --tls-cert flag form "cert.pem:key.pem".
func parseTLSCert(s string) (TLSCert, error) {
	cert, key, ok := strings.Cut(s, ":")
	if !ok || cert == "" || key == "" {
		return TLSCert{}, fmt.Errorf("tls-cert %q: want cert.pem:key.pem", s)
	}
	return TLSCert{CertFile: cert, KeyFile: key}, nil
}

// certStore picks the certificate of a TLS handshake by SNI: the
// operator's exact name first, then the custom domain's ACME certificate,
// then the wildcard of the parent domain, then the first certificate
// (clients without SNI).
type certStore struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "apps.io" for *.apps.io
	first    *tls.Certificate
	// acme holds the published ACME certificates by host, replaced whole
	// by certLoop (see acme.go).
	acme atomic.Pointer[map[string]*acmeCert]
}

// acmeCerts returns the current ACME certificates (nil map before the
// first load).
func (s *certStore) acmeCerts() map[string]*acmeCert {
	if m := s.acme.Load(); m != nil {
		return *m
	}
	return nil
}

func loadCerts(files []TLSCert) (*certStore, error) {
	if len(files) == 0 {
		return nil, errors.New("tls-addr needs at least one --tls-cert")
	}
	s := &certStore{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, f := range files {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s: %w", f.CertFile, err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("parse certificate %s: %w", f.CertFile, err)
		}
		c.Leaf = leaf
		if s.first == nil {
			s.first = &c
		}
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				s.wildcard[rest] = &c
			} else {
				s.exact[n] = &c
			}
		}
	}
	return s, nil
}

// get is tls.Config.GetCertificate.
func (s *certStore) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if c := s.exact[name]; c != nil {
		return c, nil
	}
	if c := s.acmeCerts()[name]; c != nil {
		return c.cert, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := s.wildcard[parent]; c != nil {
			return c, nil
		}
	}
	return s.first, nil
}
