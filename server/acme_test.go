package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/router"
)

func TestCertDue(t *testing.T) {
	now := time.Now()
	past, future := sqlTime(now.Add(-time.Second)), sqlTime(now.Add(time.Hour))
	for _, tt := range []struct {
		name string
		row  certRow
		had  bool
		want bool
	}{
		{"no certificate yet", certRow{}, false, true},
		{"pending (issuer died mid-way)", certRow{state: common.CertPending}, true, true},
		{"issued, not yet due", certRow{state: common.CertIssued, renewAt: future}, true, false},
		{"issued, renewal due", certRow{state: common.CertIssued, renewAt: past}, true, true},
		{"failing, backing off", certRow{state: common.CertFailing, nextTry: future}, true, false},
		{"failing, retry due", certRow{state: common.CertFailing, nextTry: past}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := certDue(tt.row, tt.had, now); got != tt.want {
				t.Fatalf("certDue = %v, want %v", got, tt.want)
			}
		})
	}
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 4: 8 * time.Minute, 40: certMaxBackoff} {
		if got := certBackoff(time.Minute, n); got != want {
			t.Errorf("backoff after %d failures = %s, want %s", n, got, want)
		}
	}
	leaf := &x509.Certificate{NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour)}
	if got := renewAt(leaf); !got.Equal(now.Add(60 * 24 * time.Hour)) {
		t.Errorf("a 90-day certificate renews at %s, want 30 days before expiry", got)
	}
}

func sqlTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: true} }

// startRouter runs a router with TLS on the test's Redis prefix.
func startRouter(t *testing.T, e *env, wildCert, wildKey string) *router.Router {
	t.Helper()
	cfg := router.DefaultConfig()
	cfg.Addr, cfg.StatusAddr, cfg.TLSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCerts = []router.TLSCert{{CertFile: wildCert, KeyFile: wildKey}}
	cfg.RedisAddr, cfg.KeyPrefix, cfg.ClusterToken = e.cfg.RedisAddr, e.cfg.KeyPrefix, e.cfg.ClusterToken
	cfg.ResyncInterval = time.Second
	cfg.DrainPeriod = 0
	cfg.AccessLog = false
	cfg.Log = common.DiscardLogger()
	r, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, r)
	return r
}

// served is the certificate a router presents for name (SNI).
func served(t *testing.T, r *router.Router, name string) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.TLSAddr(),
		&tls.Config{ServerName: name, InsecureSkipVerify: true}) // verified by the caller
	if err != nil {
		t.Fatalf("TLS handshake with %s for %s: %v", r.TLSAddr(), name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// verifyChain checks what r serves for name against roots, as a browser would.
func verifyChain(r *router.Router, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.TLSAddr(),
		&tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

type certStatus struct {
	state     string
	issuer    string
	notAfter  time.Time
	lastError string
}

func (e *env) cert(t *testing.T, name string) (certStatus, bool) {
	t.Helper()
	var c certStatus
	var na *time.Time
	var le *string
	err := e.pool.QueryRow(`SELECT state, issuer, not_after, last_error FROM domain_certs WHERE name = ?`, name).
		Scan(&c.state, &c.issuer, &na, &le)
	if err != nil {
		return c, false
	}
	if na != nil {
		c.notAfter = *na
	}
	if le != nil {
		c.lastError = *le
	}
	return c, true
}

// A verified custom domain gets a certificate from the ACME CA with no
// operator step; both routers serve it by SNI, it survives Redis losing
// its data, is renewed before it expires, and goes when the domain does.
// A refused issuance is an event of the app. Unverified domains and
// hosts under the platform's domain get nothing.
func TestACMEIssuanceAndRenewal(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	wildCert, wildKey := testenv.SelfSigned(t, dir, "wild", "*.apps.io")
	r1 := startRouter(t, e, wildCert, wildKey)
	r2 := startRouter(t, e, wildCert, wildKey)
	_, port, _ := net.SplitHostPort(r1.Addr())
	var httpPort int
	fmt.Sscan(port, &httpPort)
	// pebble validates HTTP-01 at router 1; 36 s certificates renew 24 s in
	// (12 s for the renewal itself on a loaded machine).
	ca := testenv.StartPebble(t, httpPort, 36*time.Second, "blocked.example.org")

	appID := e.insertApp(t, "web", 1, 128)
	for _, d := range []struct {
		name     string
		verified bool
	}{{"www.example.com", true}, {"blocked.example.org", true}, {"claim.example.net", false}, {"x.apps.io", true}} {
		if _, err := e.pool.Exec(`INSERT INTO domains (name, app_id, verified) VALUES (?, ?, ?)`, d.name, appID, d.verified); err != nil {
			t.Fatal(err)
		}
	}
	// An account the CA does not know (as after a test CA restarted): the
	// issuer registers a new one.
	stale, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(`INSERT INTO acme_accounts (directory, email, key_pem, uri) VALUES (?, 'ops@example.com', ?, ?)`,
		ca.Directory, certcrypto.PEMEncode(stale), strings.TrimSuffix(ca.Directory, "/dir")+"/my-account/404"); err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.ACMEDirectory, cfg.ACMECA, cfg.ACMEEmail = ca.Directory, ca.CAFile, "ops@example.com"
	cfg.ACMEInterval = 200 * time.Millisecond
	startServer(t, cfg)

	waitFor(t, "certificate issued", 60*time.Second, func() (bool, string) {
		c, _ := e.cert(t, "www.example.com")
		return c.state == string(common.CertIssued), fmt.Sprintf("%+v", c)
	})
	c, _ := e.cert(t, "www.example.com")
	if !strings.Contains(c.issuer, "Pebble") || c.notAfter.IsZero() {
		t.Fatalf("issued certificate status: %+v", c)
	}
	roots := ca.Roots(t)
	var serial string
	var first *x509.Certificate
	for i, r := range []*router.Router{r1, r2} {
		var leaf *x509.Certificate
		waitFor(t, fmt.Sprintf("router %d serves the certificate", i+1), 10*time.Second, func() (bool, string) {
			var err error
			leaf, err = verifyChain(r, "www.example.com", roots)
			return err == nil, fmt.Sprint(err)
		})
		if !strings.Contains(leaf.Issuer.CommonName, "Pebble") || leaf.Issuer.CommonName != c.issuer {
			t.Fatalf("router %d serves a certificate issued by %q, recorded %q", i+1, leaf.Issuer.CommonName, c.issuer)
		}
		if i == 0 {
			first, serial = leaf, leaf.SerialNumber.String()
		} else if leaf.SerialNumber.String() != serial {
			t.Fatalf("routers serve different certificates: %s and %s", serial, leaf.SerialNumber)
		}
	}
	if got := served(t, r2, "web.apps.io"); got.Subject.CommonName != "*.apps.io" {
		t.Fatalf("platform host served %q, want the operator's wildcard", got.Subject.CommonName)
	}

	// Any router answers a challenge from Redis; other paths and hosts
	// go to the routing as before.
	e.rdb.Set(context.Background(), e.keys.ACMEChallenge("www.example.com", "tok-1"), "tok-1.thumb", time.Minute)
	for _, tt := range []struct{ host, path, want string }{
		{"www.example.com", "/.well-known/acme-challenge/tok-1", "tok-1.thumb"},
		{"other.example.com", "/.well-known/acme-challenge/tok-1", ""},
		{"www.example.com", "/.well-known/acme-challenge/tok-2", ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r2.Addr()+tt.path, nil)
		req.Host = tt.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tt.want != "" && (resp.StatusCode != 200 || string(body) != tt.want) {
			t.Fatalf("%s%s: %d %q, want the key authorization", tt.host, tt.path, resp.StatusCode, body)
		}
		if tt.want == "" && (resp.StatusCode == 200 || resp.Header.Get(router.HeaderRouterError) == "") {
			t.Fatalf("%s%s: %d %q, want the router's own answer", tt.host, tt.path, resp.StatusCode, body)
		}
	}

	// A refused issuance: state, last error and an event of the app.
	waitFor(t, "refused issuance recorded", 30*time.Second, func() (bool, string) {
		c, _ := e.cert(t, "blocked.example.org")
		ev := e.events(t, appID, "certificate_failing")
		return c.state == string(common.CertFailing) && c.lastError != "" && len(ev) > 0 &&
			strings.Contains(ev[0], "blocked.example.org"), fmt.Sprintf("%+v %q", c, ev)
	})
	for _, name := range []string{"claim.example.net", "x.apps.io"} {
		if c, ok := e.cert(t, name); ok {
			t.Fatalf("%s got a certificate: %+v", name, c)
		}
	}

	// Redis loses its data: routers keep serving, the leader writes the
	// certificate back from MySQL.
	ctx := context.Background()
	e.rdb.Del(ctx, e.keys.Certs(), e.keys.CertsComplete(), e.keys.Epoch())
	if got := served(t, r1, "www.example.com"); got.SerialNumber.String() != serial {
		t.Fatalf("after Redis lost the certificates, router 1 serves %s", got.Subject.CommonName)
	}
	waitFor(t, "certificate published again", 10*time.Second, func() (bool, string) {
		ok, _ := e.rdb.HExists(ctx, e.keys.Certs(), "www.example.com").Result()
		epoch, _ := e.rdb.Get(ctx, e.keys.Epoch()).Result()
		complete, _ := e.rdb.Get(ctx, e.keys.CertsComplete()).Result()
		return ok && epoch != "" && complete == epoch, fmt.Sprintf("in hash %v, epoch %q, complete %q", ok, epoch, complete)
	})

	// Renewal ahead of expiry replaces the certificate on both routers.
	var renewed *x509.Certificate
	waitFor(t, "renewed certificate served by both routers", 60*time.Second, func() (bool, string) {
		a, errA := verifyChain(r1, "www.example.com", roots)
		b, errB := verifyChain(r2, "www.example.com", roots)
		if errA != nil || errB != nil {
			return false, fmt.Sprint(errA, errB)
		}
		renewed = a
		return a.SerialNumber.String() != serial && a.SerialNumber.String() == b.SerialNumber.String(),
			fmt.Sprintf("router 1 %s, router 2 %s, first %s", a.SerialNumber, b.SerialNumber, serial)
	})
	if !renewed.NotBefore.Before(first.NotAfter) {
		t.Fatalf("renewed only after expiry: new certificate from %s, the first one expired %s; events %q", renewed.NotBefore, first.NotAfter,
			append(e.events(t, appID, "certificate"), e.events(t, appID, "certificate_failing")...))
	}
	if ev := e.events(t, appID, "certificate"); len(ev) < 2 || !strings.Contains(ev[0], "issued by Pebble") || !strings.Contains(ev[1], "renewed") {
		t.Fatalf("certificate events: %q", ev)
	}

	// The domain goes: so do its certificate and key.
	if _, err := e.pool.Exec(`DELETE FROM domains WHERE name = 'www.example.com'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "certificate of a removed domain dropped", 10*time.Second, func() (bool, string) {
		_, inDB := e.cert(t, "www.example.com")
		a, b := served(t, r1, "www.example.com"), served(t, r2, "www.example.com")
		return !inDB && a.Subject.CommonName == "*.apps.io" && b.Subject.CommonName == "*.apps.io",
			fmt.Sprintf("in MySQL %v, routers serve %q and %q", inDB, a.Subject.CommonName, b.Subject.CommonName)
	})
}
