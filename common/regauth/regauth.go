// Package regauth holds the registry credentials dinp mints and the
// embedded registry checks: build grants and node user names.
package regauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Registry credentials. The embedded registry speaks distribution's token
// auth: a client asks the registry's token endpoint for a short-lived bearer
// token for the scopes it needs, with one of these Basic credentials:
//
//   - the platform user (registry.Config.Username, "dinp") and the
//     cluster token: every scope (builder, GC, an operator);
//   - GrantUser and a grant minted with the cluster token
//     (Mint): only the scopes the grant lists, until it expires
//     (a Dockerfile build: push its app's repository, pull what its
//     Dockerfile was allowed);
//   - NodeUser(node) and the node's secret: pull on the repositories
//     of the images the server placed on that node.
const (
	// GrantUser is the Basic user name that carries a grant.
	GrantUser = "dinp-grant"
	// NodeUserPrefix starts the Basic user name of a node's agent.
	NodeUserPrefix = "node/"
)

// NodeUser is the registry user name of node's agent.
func NodeUser(node string) string { return NodeUserPrefix + node }

// Access is what a grant allows on one repository.
type Access struct {
	Repo    string   `json:"repo"`
	Actions []string `json:"actions"` // "pull", "push"
}

// registryGrant is a grant's signed body.
type registryGrant struct {
	Subject string   `json:"sub"`
	Expires int64    `json:"exp"` // unix seconds
	Access  []Access `json:"access"`
}

// ErrBadGrant is returned for a grant that is malformed, forged or expired.
var ErrBadGrant = errors.New("invalid or expired registry grant")

func grantKey(clusterToken string) []byte {
	k := sha256.Sum256([]byte("dinp-registry-grant\x00" + clusterToken))
	return k[:]
}

// Mint signs a grant for access, valid for ttl from now. Only
// holders of the cluster token mint grants; the registry checks them.
func Mint(clusterToken, subject string, access []Access, ttl time.Duration, now time.Time) (string, error) {
	if clusterToken == "" {
		return "", errors.New("registry grant: no cluster token")
	}
	body, err := json.Marshal(registryGrant{Subject: subject, Expires: now.Add(ttl).Unix(), Access: access})
	if err != nil {
		return "", fmt.Errorf("registry grant: %w", err)
	}
	enc := base64.RawURLEncoding.EncodeToString(body)
	mac := hmac.New(sha256.New, grantKey(clusterToken))
	mac.Write([]byte(enc))
	return enc + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// Parse checks a grant's signature and expiry and returns its
// subject and access list.
func Parse(clusterToken, grant string, now time.Time) (string, []Access, error) {
	enc, sig, ok := strings.Cut(grant, ".")
	if !ok || clusterToken == "" {
		return "", nil, ErrBadGrant
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return "", nil, ErrBadGrant
	}
	mac := hmac.New(sha256.New, grantKey(clusterToken))
	mac.Write([]byte(enc))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "", nil, ErrBadGrant
	}
	body, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", nil, ErrBadGrant
	}
	var g registryGrant
	if err := json.Unmarshal(body, &g); err != nil || now.Unix() >= g.Expires {
		return "", nil, ErrBadGrant
	}
	return g.Subject, g.Access, nil
}
