package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/router/table"
)

// Automatic TLS, router side: every router answers the ACME HTTP-01
// challenges the leader's issuer publishes (so the CA may reach any of
// them), and serves the issued certificates (Keys.Certs) by SNI next to
// the operator's files. See server/acme.go.

// isACMEChallenge tells whether a request target asks for an ACME
// challenge answer; the front hands such requests to ServeHTTP, which may
// wait on Redis.
func isACMEChallenge(target []byte) bool {
	p := common.ACMEChallengePath
	return len(target) > len(p) && string(target[:len(p)]) == p
}

// serveACMEChallenge answers GET /.well-known/acme-challenge/{token} for a
// host with a pending challenge and reports whether it did. Without one
// (or when Redis does not answer) the request goes to the app as usual.
func (r *Router) serveACMEChallenge(w http.ResponseWriter, req *http.Request) bool {
	token, ok := strings.CutPrefix(req.URL.Path, common.ACMEChallengePath)
	if !ok || token == "" || strings.Contains(token, "/") || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		return false
	}
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	keyAuth, err := r.rdb.Get(ctx, r.keys.ACMEChallenge(table.NormalizeHost(req.Host), token)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.log.Warn("read acme challenge", "host", req.Host, "err", err)
		}
		return false
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(keyAuth))
	r.log.Info("acme challenge answered", "host", table.NormalizeHost(req.Host))
	return true
}

// acmeCert is one published certificate, parsed.
type acmeCert struct {
	raw  string // the JSON it was parsed from, to skip unchanged entries
	cert *tls.Certificate
}

// certLoop keeps the ACME layer of the certificate store in step with the
// Certs hash: at start, on every announced change and every
// ResyncInterval (which covers messages lost while disconnected).
func (r *Router) certLoop(ctx context.Context) {
	ps := r.rdb.Subscribe(ctx, r.keys.CertsChanged())
	defer ps.Close()
	changed := ps.Channel()
	tick := time.NewTicker(r.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		if err := r.loadACMECerts(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("certificate sync failed, serving the last ones", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// loadACMECerts re-reads the Certs hash. As with routes, a certificate
// missing from the hash is dropped only while the leader has marked the
// hash complete for this store epoch: after Redis lost its data, the
// certificates served so far stay until the leader has written them back.
func (r *Router) loadACMECerts(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	all, whole, err := r.readWhole(ctx, r.keys.Certs(), r.keys.CertsComplete())
	if err != nil {
		return fmt.Errorf("read certificates: %w", err)
	}
	old := r.certs.acmeCerts()
	next := make(map[string]*acmeCert, len(all))
	if !whole {
		for h, c := range old {
			next[h] = c
		}
	}
	for host, js := range all {
		host = table.NormalizeHost(host)
		if prev := old[host]; prev != nil && prev.raw == js {
			next[host] = prev
			continue
		}
		c, err := parseACMECert(js)
		if err != nil {
			// Never the key material in a log line: only what failed.
			r.log.Warn("bad certificate, keeping the previous one", "host", host, "err", err)
			if prev := old[host]; prev != nil {
				next[host] = prev
			}
			continue
		}
		next[host] = &acmeCert{raw: js, cert: c}
	}
	r.certs.acme.Store(&next)
	r.metrics.acmeCerts.Set(float64(len(next)))
	return nil
}

func parseACMECert(js string) (*tls.Certificate, error) {
	var pc common.Cert
	if err := json.Unmarshal([]byte(js), &pc); err != nil {
		return nil, errors.New("undecodable entry")
	}
	c, err := tls.X509KeyPair([]byte(pc.CertPEM), []byte(pc.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &c, nil
}
