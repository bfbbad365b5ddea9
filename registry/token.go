package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/common/regauth"
)

// Token auth (distribution's "token" access controller). The registry is
// its own token issuer: every /v2/ request needs a bearer token whose
// "access" claim lists the repository and action, and clients get one from
// TokenPath on the same listener (the challenge's realm) with Basic
// credentials (see regauth.GrantUser):
//
//	user Config.Username, password cluster token  → any scope
//	user dinp-grant, password a grant             → the grant's scopes
//	user node/<id>, password the node's secret    → pull on the repositories
//	                                                of the images placed on <id>
//
// Tokens are Ed25519-signed JWTs valid for TokenTTL. The signing key is
// derived from the cluster token, so several registry processes sharing a
// storage accept each other's tokens; the public key is written as a JWKS
// file that distribution's access controller reads.
const (
	// TokenPath is where the token endpoint (the realm) is served.
	TokenPath = "/auth/token"
	// TokenService is the token's audience and the challenge's service.
	TokenService = "dinp-registry"
	// tokenIssuer is the token's issuer.
	tokenIssuer = "dinp-registry-token"
	// TokenTTL is how long an issued bearer token is valid.
	TokenTTL = 5 * time.Minute
)

// issuer signs bearer tokens and decides what a credential may do.
type issuer struct {
	key   ed25519.PrivateKey
	kid   string
	admin string // platform user name
	token string // cluster token
	// nodeRepos lists the repositories a node may pull.
	nodeRepos func(ctx context.Context, node, secret string) ([]string, error)
	// refused counts token requests refused for their credentials.
	refused prometheus.Counter
}

// newIssuer derives the signing key from the cluster token.
func newIssuer(admin, clusterToken string) *issuer {
	seed := sha256.Sum256([]byte("dinp-registry-token-signing\x00" + clusterToken))
	key := ed25519.NewKeyFromSeed(seed[:])
	sum := sha256.Sum256(key.Public().(ed25519.PublicKey))
	return &issuer{key: key, kid: hex.EncodeToString(sum[:8]), admin: admin, token: clusterToken}
}

// writeJWKS writes the public key distribution verifies tokens with.
func (is *issuer) writeJWKS(path string) error {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: is.key.Public(), KeyID: is.kid, Algorithm: string(jose.EdDSA), Use: "sig",
	}}}
	raw, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("encode jwks: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("jwks dir: %w", err)
	}
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write jwks: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write jwks: %w", err)
	}
	return nil
}

// scope is one requested resource: type:name:actions.
type scope struct {
	typ, name string
	actions   []string
}

// parseScopes reads scope parameters ("repository:app:pull,push"), several
// per value when space-separated (the OAuth2 form).
func parseScopes(values []string) []scope {
	var out []scope
	for _, v := range values {
		for _, s := range strings.Fields(v) {
			typ, rest, ok := strings.Cut(s, ":")
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, ":")
			if i <= 0 {
				continue
			}
			out = append(out, scope{typ: typ, name: rest[:i], actions: strings.Split(rest[i+1:], ",")})
		}
	}
	return out
}

// permit decides, for one credential, whether action on a repository is
// allowed.
type permit func(typ, name, action string) bool

// authenticate maps Basic credentials to the subject and what it may do.
func (is *issuer) authenticate(ctx context.Context, user, pass string) (string, permit, error) {
	switch {
	case user == is.admin && common.TokenEqual(pass, is.token):
		return user, func(string, string, string) bool { return true }, nil
	case user == regauth.GrantUser:
		sub, access, err := regauth.Parse(is.token, pass, time.Now())
		if err != nil {
			return "", nil, err
		}
		return "grant:" + sub, func(typ, name, action string) bool {
			if typ != "repository" {
				return false
			}
			for _, a := range access {
				if a.Repo == name && slices.Contains(a.Actions, action) {
					return true
				}
			}
			return false
		}, nil
	case strings.HasPrefix(user, regauth.NodeUserPrefix) && is.nodeRepos != nil:
		node := strings.TrimPrefix(user, regauth.NodeUserPrefix)
		repos, err := is.nodeRepos(ctx, node, pass)
		if err != nil {
			return "", nil, err
		}
		return user, func(typ, name, action string) bool {
			return typ == "repository" && action == "pull" && slices.Contains(repos, name)
		}, nil
	}
	return "", nil, errBadCredentials
}

var errBadCredentials = fmt.Errorf("bad registry credentials")

// refuse counts a refused token request.
func (is *issuer) refuse() {
	if is.refused != nil {
		is.refused.Inc()
	}
}

// serveToken is the token endpoint: GET with Basic auth (Docker's flow) or
// POST with an OAuth2 password grant (containerd's). Scopes the credential
// does not cover are left out of the token, as the scheme says: the
// registry then refuses those requests (401 insufficient_scope).
func (is *issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	var user, pass string
	var scopes []string
	var ok bool
	switch r.Method {
	case http.MethodGet:
		user, pass, ok = r.BasicAuth()
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "password" {
			tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "only the password grant is supported")
			return
		}
		user, pass, ok = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		scopes = r.PostForm["scope"]
	default:
		tokenError(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET or POST")
		return
	}
	if !ok {
		is.refuse()
		w.Header().Set("WWW-Authenticate", `Basic realm="dinp-registry"`)
		tokenError(w, http.StatusUnauthorized, "unauthorized", "credentials required")
		return
	}
	sub, allowed, err := is.authenticate(r.Context(), user, pass)
	if err != nil {
		is.refuse()
		w.Header().Set("WWW-Authenticate", `Basic realm="dinp-registry"`)
		tokenError(w, http.StatusUnauthorized, "unauthorized", "invalid credentials")
		return
	}
	var access []*token.ResourceActions
	for _, s := range parseScopes(scopes) {
		var acts []string
		for _, a := range s.actions {
			if allowed(s.typ, s.name, a) {
				acts = append(acts, a)
			}
		}
		if len(acts) > 0 {
			access = append(access, &token.ResourceActions{Type: s.typ, Name: s.name, Actions: acts})
		}
	}
	now := time.Now()
	raw, err := is.sign(sub, access, now)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "internal", "cannot sign token")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"token": raw, "access_token": raw, "expires_in": int(TokenTTL / time.Second), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

// sign issues a bearer token for access.
func (is *issuer) sign(sub string, access []*token.ResourceActions, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: is.key, KeyID: is.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	if access == nil {
		access = []*token.ResourceActions{}
	}
	claims := token.ClaimSet{
		Issuer: tokenIssuer, Subject: sub, Audience: token.AudienceList{TokenService},
		Expiration: now.Add(TokenTTL).Unix(), NotBefore: now.Add(-time.Second).Unix(), IssuedAt: now.Unix(),
		JWTID: config.RandomToken(12), Access: access,
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// nodeRepos reads from MySQL whether secret is node's and the repositories
// of the releases the server placed on it: its instances and its one-off
// tasks not yet ended (both rows are written before the node's
// assignments). No DSN, no node: nothing is allowed.
func (r *Registry) nodeRepos(ctx context.Context, node, secret string) ([]string, error) {
	pool, err := r.gcDB(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stored, err := reads.NodeSecretHash(ctx, pool, node)
	if err != nil {
		return nil, errBadCredentials
	}
	sum := sha256.Sum256([]byte(secret))
	if !common.TokenEqual(stored, hex.EncodeToString(sum[:])) {
		return nil, errBadCredentials
	}
	imgs, err := reads.NodeImages(ctx, pool, node)
	if err != nil {
		return nil, fmt.Errorf("node images: %w", err)
	}
	var repos []string
	for _, img := range imgs {
		if ref, err := name.ParseReference(img, name.Insecure); err == nil {
			repos = append(repos, ref.Context().RepositoryStr())
		}
	}
	return repos, nil
}
