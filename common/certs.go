package common

// CertState is where a custom domain's automatic (ACME) certificate stands.
type CertState string

const (
	// CertPending: the domain is verified and its first certificate is
	// being obtained.
	CertPending CertState = "pending"
	// CertIssued: a certificate is issued and served; it is renewed ahead
	// of expiry.
	CertIssued CertState = "issued"
	// CertFailing: the last issuance or renewal failed; it is retried with
	// backoff (a certificate issued before keeps being served until it
	// expires).
	CertFailing CertState = "failing"
)

// ACMEChallengePath is where ACME HTTP-01 challenges are answered (RFC 8555
// section 8.3), by every router, for any host.
const ACMEChallengePath = "/.well-known/acme-challenge/"

// Cert is one certificate as the leader publishes it to routers
// (Keys.Certs). KeyPEM is a private key: never log a Cert.
type Cert struct {
	CertPEM string `json:"cert"` // leaf first, then the chain
	KeyPEM  string `json:"key"`
}
