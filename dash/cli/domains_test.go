package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// TestDomainRow: `dinp domains APP` shows each domain's certificate state,
// issuer and expiry, and a failure's reason (cut to fit a row).
func TestDomainRow(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("x", 200)
	for _, tt := range []struct {
		name string
		d    domainView
		want []string
	}{
		{"issued", domainView{Name: "a.example.com", Verified: true,
			Certificate: &api.DomainCert{State: common.CertIssued, Issuer: "R11", ExpiresAt: &exp}},
			[]string{"a.example.com", "verified", "", "issued", "R11", "2027-01-02T03:04:05Z"}},
		{"failing", domainView{Name: "b.example.com", Verified: true,
			Certificate: &api.DomainCert{State: common.CertFailing, LastError: long}},
			[]string{"b.example.com", "verified", "", "failing: " + long[:77] + "...", "-", "-"}},
		{"no certificate", domainView{Name: "c.example.com", Verified: true},
			[]string{"c.example.com", "verified", "", "-", "-", "-"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Split(domainRow(tt.d), "\t"); strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("row %q, want %q", got, tt.want)
			}
		})
	}
	if n := strings.Count(domainHeader, "\t"); n != 5 {
		t.Fatalf("header has %d columns, rows have 6", n+1)
	}
}
