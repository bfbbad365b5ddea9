package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/common/redisx"
)

// Automatic TLS: while it leads, the server obtains a certificate over ACME
// (RFC 8555) for every verified custom domain, renews it ahead of expiry and
// publishes it to the routers, which serve it by SNI. MySQL (acme_accounts,
// domain_certs) holds the account and every certificate; Redis only carries
// copies (Keys.Certs), rewritten whenever the store lost them. HTTP-01
// challenges are answered by every router from Keys.ACMEChallenge, so any
// router the CA reaches proves the name.

const (
	// challengeTTL bounds how long a challenge answer outlives an issuance
	// that died before cleaning up.
	challengeTTL = 10 * time.Minute
	// obtainTimeout bounds one issuance (order, challenge, finalize).
	obtainTimeout = 3 * time.Minute
	// certMaxBackoff caps the wait between failed issuances of one domain.
	certMaxBackoff = 6 * time.Hour
	// maxCertError bounds the last error kept and shown per domain.
	maxCertError = 1000
)

// certDomain is a verified custom domain the issuer keeps certified.
type certDomain struct {
	name  string
	appID int64
}

// certRow is a domain's row of domain_certs (PEMs left out).
type certRow struct {
	state    common.CertState
	renewAt  sql.NullTime
	nextTry  sql.NullTime
	failures int
	issued   bool // a certificate was issued before (a renewal is due or failing)
}

// certDue tells whether a domain needs an issuance now: none yet, a
// renewal whose time has come, or a retry whose backoff has passed.
func certDue(r certRow, ok bool, now time.Time) bool {
	switch {
	case !ok || r.state == common.CertPending:
		return true
	case r.state == common.CertFailing:
		return !r.nextTry.Valid || !now.Before(r.nextTry.Time)
	default:
		return !r.renewAt.Valid || !now.Before(r.renewAt.Time)
	}
}

// renewAt is when a certificate is renewed: after two thirds of its
// lifetime (30 days ahead for a 90-day certificate).
func renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// certBackoff is the wait after the n-th consecutive failure (n ≥ 1).
func certBackoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < certMaxBackoff; i++ {
		d *= 2
	}
	return min(d, certMaxBackoff)
}

// issuer is the leader's ACME client. One goroutine (runACME) uses it.
type issuer struct {
	s      *Server
	pool   *sql.DB
	http   *http.Client
	client *lego.Client // nil until the account is loaded or registered
	// published is the store epoch in which every certificate was written
	// to Redis; a change (Redis restarted, flushed, failed over) or a new
	// leadership ("") writes them all again.
	published string
}

// runACME keeps every verified custom domain certified until ctx
// (leadership) ends. Off without ACMEDirectory.
func (s *Server) runACME(ctx context.Context, pool *sql.DB) {
	if s.cfg.ACMEDirectory == "" {
		return
	}
	hc, err := acmeHTTPClient(s.cfg.ACMECA)
	if err != nil {
		s.log.Error("automatic TLS disabled", "err", err)
		return
	}
	quietLego()
	is := &issuer{s: s, pool: pool, http: hc}
	for {
		is.round(ctx)
		if !common.Sleep(ctx, s.cfg.ACMEInterval) {
			return
		}
	}
}

var legoLogOnce sync.Once

// quietLego keeps lego's (process-wide) log to warnings: the issuer logs
// and records what matters itself.
func quietLego() {
	legoLogOnce.Do(func() { legolog.SetDefault(common.NewLogger("acme", "warn")) })
}

// acmeHTTPClient trusts the system roots plus caFile (a test CA's).
func acmeHTTPClient(caFile string) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("acme ca: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme ca %s: no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// round drops the certificates of domains no longer bound, makes sure
// Redis has every certificate, then issues or renews what is due, one
// domain at a time.
func (is *issuer) round(ctx context.Context) {
	doms, err := is.verifiedDomains(ctx)
	if err != nil {
		is.warn(ctx, "read domains", err)
		return
	}
	rows, err := is.certRows(ctx)
	if err != nil {
		is.warn(ctx, "read certificates", err)
		return
	}
	for name := range rows {
		if _, ok := doms[name]; !ok {
			is.forget(ctx, name)
			delete(rows, name)
		}
	}
	is.publishAll(ctx)
	now := time.Now()
	for _, name := range slices.Sorted(maps.Keys(doms)) {
		r, ok := rows[name]
		if ctx.Err() != nil {
			return
		}
		if certDue(r, ok, now) {
			is.obtain(ctx, doms[name], r, ok)
		}
	}
}

func (is *issuer) warn(ctx context.Context, msg string, err error) {
	if ctx.Err() == nil {
		is.s.log.Warn(msg, "err", err)
	}
}

// verifiedDomains are the names to certify: verified custom domains, never
// hosts under the platform's domain (the operator's wildcard covers them).
func (is *issuer) verifiedDomains(ctx context.Context) (map[string]certDomain, error) {
	doms, err := reads.VerifiedDomains(ctx, is.pool)
	if err != nil {
		return nil, err
	}
	base := strings.ToLower(is.s.cfg.Domain)
	out := map[string]certDomain{}
	for _, d := range doms {
		if d.Name == base || strings.HasSuffix(d.Name, "."+base) {
			continue
		}
		out[d.Name] = certDomain{name: d.Name, appID: d.AppID}
	}
	return out, nil
}

func (is *issuer) certRows(ctx context.Context) (map[string]certRow, error) {
	rows, err := is.pool.QueryContext(ctx, `SELECT name, state, renew_at, next_try, failures, cert_pem IS NOT NULL FROM domain_certs`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]certRow{}
	for rows.Next() {
		var name string
		var r certRow
		if err := rows.Scan(&name, &r.state, &r.renewAt, &r.nextTry, &r.failures, &r.issued); err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, rows.Err()
}

// forget deletes the certificate (and its key) of a domain that is no
// longer bound, from MySQL and from the routers.
func (is *issuer) forget(ctx context.Context, name string) {
	if _, err := is.pool.ExecContext(ctx, `DELETE FROM domain_certs WHERE name = ?`, name); err != nil {
		is.warn(ctx, "forget certificate", err)
		return
	}
	pipe := is.s.rdb.TxPipeline()
	pipe.HDel(ctx, is.s.keys.Certs(), name)
	pipe.Publish(ctx, is.s.keys.CertsChanged(), name)
	if _, err := pipe.Exec(ctx); err != nil {
		is.warn(ctx, "unpublish certificate", err)
	}
	is.s.log.Info("certificate forgotten", "domain", name)
}

// publishAll writes every certificate to Redis once per store epoch (and
// drops what a previous leader left there for domains now gone), then
// marks the hash complete for that epoch.
func (is *issuer) publishAll(ctx context.Context) {
	epoch, err := redisx.StoreEpoch(ctx, is.s.rdb, is.s.keys)
	if err != nil || epoch == is.published {
		return
	}
	rows, err := is.pool.QueryContext(ctx, `SELECT name, cert_pem, key_pem FROM domain_certs WHERE cert_pem IS NOT NULL`)
	if err != nil {
		is.warn(ctx, "read certificates", err)
		return
	}
	want := map[string]string{}
	for rows.Next() {
		var name string
		var c common.Cert
		if err := rows.Scan(&name, &c.CertPEM, &c.KeyPEM); err != nil {
			rows.Close()
			is.warn(ctx, "read certificates", err)
			return
		}
		js, _ := json.Marshal(c)
		want[name] = string(js)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		is.warn(ctx, "read certificates", err)
		return
	}
	have, err := is.s.rdb.HKeys(ctx, is.s.keys.Certs()).Result()
	if err != nil {
		is.warn(ctx, "read published certificates", err)
		return
	}
	pipe := is.s.rdb.TxPipeline()
	for _, h := range have {
		if _, ok := want[h]; !ok {
			pipe.HDel(ctx, is.s.keys.Certs(), h)
		}
	}
	if len(want) > 0 {
		pipe.HSet(ctx, is.s.keys.Certs(), want)
	}
	pipe.Set(ctx, is.s.keys.CertsComplete(), redisx.EpochMarker(epoch), 0)
	pipe.Publish(ctx, is.s.keys.CertsChanged(), "")
	if _, err := pipe.Exec(ctx); err != nil {
		is.warn(ctx, "publish certificates", err)
		return
	}
	is.published = epoch
	is.s.log.Info("certificates published", "certificates", len(want))
}

// obtain issues (or renews) the certificate of d and records the outcome.
func (is *issuer) obtain(ctx context.Context, d certDomain, r certRow, had bool) {
	if !had {
		// Shown as pending while the first issuance runs.
		if _, err := is.pool.ExecContext(ctx, `INSERT IGNORE INTO domain_certs (name, state) VALUES (?, ?)`,
			d.name, common.CertPending); err != nil {
			is.warn(ctx, "record certificate", err)
			return
		}
	}
	octx, cancel := context.WithTimeout(ctx, obtainTimeout)
	defer cancel()
	res, leaf, err := is.issue(octx, d.name)
	if ctx.Err() != nil {
		return // leadership ended: the next leader picks it up
	}
	if err != nil {
		is.failed(ctx, d, r, err)
		return
	}
	issuer := leaf.Issuer.CommonName
	if issuer == "" {
		issuer = strings.Join(leaf.Issuer.Organization, ", ")
	}
	renewed := had && r.issued
	_, err = is.pool.ExecContext(ctx, `UPDATE domain_certs SET state = ?, issuer = ?, not_after = ?, renew_at = ?,
		cert_pem = ?, key_pem = ?, last_error = NULL, failures = 0, next_try = NULL WHERE name = ?`,
		common.CertIssued, issuer, leaf.NotAfter.UTC(), renewAt(leaf).UTC(), string(res.Certificate), string(res.PrivateKey), d.name)
	if err != nil {
		// Not recorded: the next round issues again rather than serve a
		// certificate MySQL does not know.
		is.warn(ctx, "record certificate", err)
		return
	}
	js, _ := json.Marshal(common.Cert{CertPEM: string(res.Certificate), KeyPEM: string(res.PrivateKey)})
	pipe := is.s.rdb.TxPipeline()
	pipe.HSet(ctx, is.s.keys.Certs(), d.name, js)
	pipe.Publish(ctx, is.s.keys.CertsChanged(), d.name)
	if _, err := pipe.Exec(ctx); err != nil {
		is.warn(ctx, "publish certificate", err)
		is.published = "" // rewrite them all once Redis answers
	}
	verb := "issued"
	if renewed {
		verb = "renewed"
	}
	is.event(ctx, d, "certificate", fmt.Sprintf("certificate for %s %s by %s, expires %s",
		d.name, verb, issuer, leaf.NotAfter.UTC().Format(time.RFC3339)))
	is.s.log.Info("certificate "+verb, "domain", d.name, "issuer", issuer, "expires", leaf.NotAfter.UTC())
}

// failed records a failed issuance: state failing (a certificate issued
// before stays and is served until it expires), backoff, and an event.
func (is *issuer) failed(ctx context.Context, d certDomain, r certRow, err error) {
	msg := err.Error()
	if len(msg) > maxCertError {
		msg = msg[:maxCertError]
	}
	n := r.failures + 1
	wait := certBackoff(12*is.s.cfg.ACMEInterval, n)
	if _, err := is.pool.ExecContext(ctx, `UPDATE domain_certs SET state = ?, last_error = ?, failures = ?, next_try = ? WHERE name = ?`,
		common.CertFailing, msg, n, time.Now().Add(wait).UTC(), d.name); err != nil {
		is.warn(ctx, "record certificate failure", err)
	}
	is.event(ctx, d, "certificate_failing", fmt.Sprintf("certificate for %s failed (attempt %d, next in %s): %s",
		d.name, n, wait.Round(time.Second), msg))
	is.s.log.Warn("certificate failed", "domain", d.name, "attempt", n, "retry_in", wait, "err", msg)
}

func (is *issuer) event(ctx context.Context, d certDomain, kind, msg string) {
	if _, err := is.pool.ExecContext(ctx, `INSERT INTO events (app_id, kind, message) VALUES (?, ?, ?)`, d.appID, kind, msg); err != nil {
		is.warn(ctx, "record certificate event", err)
	}
}

// issue runs one ACME order for name and checks what came back.
func (is *issuer) issue(ctx context.Context, name string) (*certificate.Resource, *x509.Certificate, error) {
	cl, err := is.acmeClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	res, err := cl.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{name}, Bundle: true, KeyType: certcrypto.EC256})
	var pd *acme.ProblemDetails
	if errors.As(err, &pd) && pd.Type == acme.AccountDoesNotExistErrorType {
		// The CA no longer knows the account (deactivated, or a test CA
		// restarted): the next attempt registers a new one.
		is.client = nil
		if _, derr := is.pool.ExecContext(ctx, `DELETE FROM acme_accounts WHERE directory = ? AND email = ?`,
			is.s.cfg.ACMEDirectory, is.s.cfg.ACMEEmail); derr != nil {
			is.warn(ctx, "forget acme account", derr)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	pair, err := tls.X509KeyPair(res.Certificate, res.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issued certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("issued certificate: %w", err)
	}
	if leaf.VerifyHostname(name) != nil {
		return nil, nil, fmt.Errorf("issued certificate does not name %s", name)
	}
	return res, leaf, nil
}

// acmeUser is the ACME account as lego sees it.
type acmeUser struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *acmeUser) GetEmail() string                       { return u.email }
func (u *acmeUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *acmeUser) GetPrivateKey() crypto.Signer           { return u.key }

var _ registration.User = (*acmeUser)(nil)

// acmeClient returns the client of the installation's account for the
// directory and e-mail, loading it from MySQL or registering it once.
func (is *issuer) acmeClient(ctx context.Context) (*lego.Client, error) {
	if is.client != nil {
		return is.client, nil
	}
	dir, email := is.s.cfg.ACMEDirectory, is.s.cfg.ACMEEmail
	u := &acmeUser{email: email}
	var keyPEM, uri string
	err := is.pool.QueryRowContext(ctx, `SELECT key_pem, uri FROM acme_accounts WHERE directory = ? AND email = ?`, dir, email).
		Scan(&keyPEM, &uri)
	switch {
	case err == nil:
		if u.key, err = certcrypto.ParsePEMPrivateKey([]byte(keyPEM)); err != nil {
			return nil, fmt.Errorf("acme account key: %w", err)
		}
		u.reg = &acme.ExtendedAccount{Location: uri}
	case errors.Is(err, sql.ErrNoRows):
		if u.key, err = certcrypto.GeneratePrivateKey(certcrypto.EC256); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("read acme account: %w", err)
	}
	cfg := lego.NewConfig(u)
	cfg.CADirURL = dir
	cfg.HTTPClient = is.http
	cfg.UserAgent = "dinp/" + common.Version
	cl, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("acme directory %s: %w", dir, err)
	}
	if err := cl.Challenge.SetHTTP01Provider(challengeProvider{rdb: is.s.rdb, keys: is.s.keys}); err != nil {
		return nil, err
	}
	if u.reg == nil {
		reg, err := cl.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, fmt.Errorf("acme register: %w", err)
		}
		u.reg = reg
		if _, err := is.pool.ExecContext(ctx, `INSERT INTO acme_accounts (directory, email, key_pem, uri) VALUES (?, ?, ?, ?)`,
			dir, email, string(certcrypto.PEMEncode(u.key)), reg.Location); err != nil {
			return nil, fmt.Errorf("save acme account: %w", err)
		}
		is.s.log.Info("acme account registered", "directory", dir, "account", reg.Location)
	}
	is.client = cl
	return cl, nil
}

// challengeProvider publishes HTTP-01 answers where every router finds them.
type challengeProvider struct {
	rdb  *redis.Client
	keys common.Keys
}

func (p challengeProvider) Present(ctx context.Context, domain, token, keyAuth string) error {
	return p.rdb.Set(ctx, p.keys.ACMEChallenge(strings.ToLower(domain), token), keyAuth, challengeTTL).Err()
}

func (p challengeProvider) CleanUp(ctx context.Context, domain, token, _ string) error {
	return p.rdb.Del(ctx, p.keys.ACMEChallenge(strings.ToLower(domain), token)).Err()
}
