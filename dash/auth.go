package dash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
)

// TokenPrefix starts every dash API token, so a leaked token is recognisable
// (secret scanners, logs) and never mistaken for the cluster token.
const TokenPrefix = "dinp_"

// newToken returns a fresh API token and the hash stored for it.
func newToken() (token, hash string) {
	token = TokenPrefix + common.RandomToken(32)
	return token, hashToken(token)
}

// hashToken is what tokens.hash holds: the SHA-256 hex of the secret. A
// fast hash is right here: tokens carry 256 bits of randomness.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

const userKey = "dash.user"

// authenticate admits requests bearing a valid, unrevoked API token and
// stores its user in the context.
func (d *Dash) authenticate(c *gin.Context) {
	tok := common.BearerToken(c.Request)
	if !strings.HasPrefix(tok, TokenPrefix) {
		common.WriteError(c, common.ErrUnauthorized)
		return
	}
	u, err := d.store.userByTokenHash(c.Request.Context(), hashToken(tok))
	if errors.Is(err, errNotFound) {
		common.WriteError(c, common.ErrUnauthorized)
		return
	}
	if err != nil {
		d.fail(c, err)
		return
	}
	c.Set(userKey, u)
	c.Next()
}

func currentUser(c *gin.Context) User {
	return c.MustGet(userKey).(User)
}

// apiError maps an error to its HTTP answer. It is the only place where
// store errors become statuses.
func apiError(err error) *common.APIError {
	var ae *common.APIError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errNotFound):
		return common.Errf(http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, errExists):
		return common.Errf(http.StatusConflict, "already_exists", err.Error())
	case errors.Is(err, errNoRelease):
		return common.Errf(http.StatusConflict, "no_release", err.Error()+"; deploy first")
	case errors.Is(err, context.Canceled):
		return common.Errf(499, "canceled", "request canceled")
	}
	return common.Errf(http.StatusInternalServerError, "internal", "internal error")
}

// fail answers err, logging internal errors (whose detail clients never see).
func (d *Dash) fail(c *gin.Context, err error) {
	ae := apiError(err)
	if ae.Status >= 500 {
		d.log.Error("request failed", "method", c.Request.Method, "path", c.FullPath(), "err", err)
	}
	common.WriteError(c, ae)
}
