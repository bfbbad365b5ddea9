package api

import (
	"time"

	"github.com/dinp/dinp/common"
)

// DomainCert is a verified custom domain's automatic certificate (ACME),
// present once the platform has started obtaining it.
type DomainCert struct {
	State  common.CertState `json:"state"`            // pending, issued or failing
	Issuer string           `json:"issuer,omitempty"` // the issuing CA's name
	// ExpiresAt is the end of the certificate being served (nil before the
	// first issuance); it is renewed well ahead of it.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// LastError says why the last issuance or renewal failed (state failing).
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}
