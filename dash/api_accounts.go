package dash

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
)

// requestToken is the token (or web session) the request came with.
func requestToken(c *gin.Context) string {
	tok := httpapi.BearerToken(c.Request)
	if s, ok := c.Get(sessionKey); ok {
		tok = s.(string)
	}
	return tok
}

// errNoSuchToken answers a token id that is not a number.
var errNoSuchToken = common.Errf(http.StatusNotFound, "not_found", "no such token")

func (h *apiHandlers) listUsers(c *gin.Context) {
	us, err := h.s.users(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"users": us})
}

func (h *apiHandlers) createUser(c *gin.Context) {
	var req CreateUserRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	u, err := h.s.createUser(c.Request.Context(), currentUser(c), req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"user": u})
}

func (h *apiHandlers) changePassword(c *gin.Context) {
	var req PasswordRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	u := currentUser(c)
	if _, err := h.s.checkPassword(c.Request.Context(), clientIP(c.Request), u.Name, req.Current); err != nil {
		h.failLogin(c, err)
		return
	}
	if err := h.s.newPassword(c.Request.Context(), u, requestToken(c), req.New); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changed": true, "other_tokens_revoked": true})
}

func (h *apiHandlers) listTokens(c *gin.Context) {
	ts, err := h.s.tokens(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts})
}

func (h *apiHandlers) createToken(c *gin.Context) {
	var req TokenRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	tok, id, exp, err := h.s.createToken(c.Request.Context(), currentUser(c), req.Name, req.ExpiresIn)
	if err != nil {
		h.fail(c, err)
		return
	}
	out := gin.H{"token": tok, "id": id, "name": req.Name}
	if !exp.IsZero() {
		out["expires_at"] = exp.UTC()
	}
	c.JSON(http.StatusCreated, out)
}

func (h *apiHandlers) revokeToken(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		h.fail(c, errNoSuchToken)
		return
	}
	if err := h.s.revokeToken(c.Request.Context(), currentUser(c), id); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"revoked": id})
}

func (h *apiHandlers) patchUser(c *gin.Context) {
	var req UserPatch
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if req.Disabled == nil {
		h.fail(c, invalid("invalid_patch", "nothing to change (disabled: true|false)"))
		return
	}
	if err := h.s.setDisabled(c.Request.Context(), currentUser(c), c.Param("user"), *req.Disabled); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"user": c.Param("user"), "disabled": *req.Disabled})
}

func (h *apiHandlers) deleteUser(c *gin.Context) {
	if err := h.s.deleteUser(c.Request.Context(), currentUser(c), c.Param("user")); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deleted": c.Param("user")})
}

func (h *apiHandlers) listUserTokens(c *gin.Context) {
	ts, err := h.s.userTokens(c.Request.Context(), currentUser(c), c.Param("user"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts})
}

func (h *apiHandlers) revokeUserToken(c *gin.Context) {
	ctx, u, name := c.Request.Context(), currentUser(c), c.Param("user")
	tid, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		// An unknown user is named before a malformed token id.
		if _, err = h.s.userID(ctx, u, name); err == nil {
			err = errNoSuchToken
		}
	} else {
		err = h.s.revokeUserToken(ctx, u, name, tid)
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"revoked": tid})
}

// login checks a password and answers a new API token (shown once).
func (h *apiHandlers) login(c *gin.Context) {
	var req LoginRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	tok, id, u, err := h.s.login(c.Request.Context(), clientIP(c.Request), req)
	if err != nil {
		h.failLogin(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"token": tok, "token_id": id, "user": u})
}

// failLogin is fail with Retry-After on a rate-limited login.
func (h *apiHandlers) failLogin(c *gin.Context, err error) {
	var re *retryError
	if errors.As(err, &re) {
		c.Header("Retry-After", strconv.Itoa(re.seconds))
	}
	if errors.Is(err, errBadLogin) {
		h.log.Info("login failed", "ip", clientIP(c.Request))
	}
	h.fail(c, err)
}

// logout revokes the token (or session) the request came with.
func (h *apiHandlers) logout(c *gin.Context) {
	if err := h.s.logout(c.Request.Context(), requestToken(c)); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"logged_out": true})
}

// PasswordRequest is the body of PUT /api/v1/user/password.
type PasswordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	// ExpiresIn makes the token expire ("720h", "30d"); empty: never.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// UserPatch is the body of PATCH /api/v1/users/{user} (admins).
type UserPatch struct {
	Disabled *bool `json:"disabled,omitempty"`
}
