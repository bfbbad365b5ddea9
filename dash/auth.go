package dash

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
)

// TokenPrefix starts every dash API token, so a leaked token is recognisable
// (secret scanners, logs) and never mistaken for the cluster token.
const TokenPrefix = "dinp_"

// SessionCookie names the web session cookie. Its value is a token of the
// tokens table named sessionTokenName, so sessions are stored hashed and
// logging out (or revoking) ends them at once, like API tokens.
const SessionCookie = "dinp_session"

// sessionTokenName marks the tokens rows that are web sessions; they are
// hidden from token lists and expire after sessionDays.
const (
	sessionTokenName = "web session"
	sessionDays      = 7
	sessionDaysSQL   = "7" // sessionDays in SQL text
)

// CSRFHeader carries the CSRF token on API calls made with the session
// cookie (the dashboard's own scripts); forms send field csrfField.
const (
	CSRFHeader = "X-CSRF-Token"
	csrfField  = "csrf"
)

// newToken returns a fresh API token and the hash stored for it.
func newToken() (token, hash string) {
	token = TokenPrefix + config.RandomToken(32)
	return token, hashToken(token)
}

// hashToken is what tokens.hash holds: the SHA-256 hex of the secret. A
// fast hash is right here: tokens carry 256 bits of randomness.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// csrfToken derives the CSRF token of a session from its secret: only a
// page served to the cookie's holder can know it, and it needs no storage.
func csrfToken(session string) string {
	m := hmac.New(sha256.New, []byte(session))
	m.Write([]byte("dinp csrf"))
	return hex.EncodeToString(m.Sum(nil))
}

// errCSRF answers a cookie-authenticated change without its CSRF token.
var errCSRF = common.Errf(http.StatusForbidden, "csrf", "missing or invalid CSRF token; reload the page")

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}
