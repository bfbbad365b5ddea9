package dash

import (
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// TestDomainsShowCertificate: the domain listing shows each verified
// domain's automatic certificate (state, issuer, expiry, last error) as
// the leader's issuer recorded it, and nothing for unverified claims.
func TestDomainsShowCertificate(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("shop")
	for _, n := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		if st, code := e.call("POST", "/api/v1/apps/shop/domains", e.admin.Token, DomainRequest{Name: n}, nil); st != 201 {
			t.Fatalf("bind %s: %d %s", n, st, code)
		}
	}
	alice := e.addUser("alice", "alices")
	e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "claimer"}, nil)
	if st, code := e.call("POST", "/api/v1/apps/claimer/domains", alice, DomainRequest{Name: "d.example.com"}, nil); st != 201 {
		t.Fatalf("claim: %d %s", st, code)
	}
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	mustExec(t, e.pool, `INSERT INTO domain_certs (name, state, issuer, not_after) VALUES ('a.example.com', 'issued', 'Test CA', ?)`, expires)
	mustExec(t, e.pool, `INSERT INTO domain_certs (name, state, last_error, failures) VALUES ('b.example.com', 'failing', 'rejected identifier', 2)`)
	mustExec(t, e.pool, `INSERT INTO domain_certs (name, state) VALUES ('d.example.com', 'issued')`)

	var out struct{ Domains []Domain }
	if st, code := e.call("GET", "/api/v1/apps/shop/domains", e.admin.Token, nil, &out); st != 200 {
		t.Fatalf("list: %d %s", st, code)
	}
	got := map[string]*DomainCert{}
	for _, d := range out.Domains {
		got[d.Name] = d.Certificate
	}
	if c := got["a.example.com"]; c == nil || c.State != common.CertIssued || c.Issuer != "Test CA" || c.ExpiresAt == nil || !c.ExpiresAt.Equal(expires) {
		t.Errorf("issued: %+v", c)
	}
	if c := got["b.example.com"]; c == nil || c.State != common.CertFailing || c.LastError != "rejected identifier" || c.ExpiresAt != nil {
		t.Errorf("failing: %+v", c)
	}
	if c := got["c.example.com"]; c != nil {
		t.Errorf("no certificate yet, listed %+v", c)
	}
	out.Domains = nil
	e.call("GET", "/api/v1/apps/claimer/domains", alice, nil, &out)
	if len(out.Domains) != 1 || out.Domains[0].Certificate != nil {
		t.Errorf("an unverified claim shows a certificate: %+v", out.Domains)
	}
}
