package dash

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) listUsers(c *gin.Context) {
	us, err := h.s.store.users(c.Request.Context())
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
	u, err := h.s.addUser(c.Request.Context(), req)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("user created", "user", u.Name, "by", currentUser(c).Name)
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
	if err := h.s.newPassword(c, u, req.New); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changed": true, "other_tokens_revoked": true})
}

func (h *apiHandlers) listTokens(c *gin.Context) {
	ts, err := h.s.store.tokens(c.Request.Context(), currentUser(c).ID)
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
	exp, err := tokenExpiry(time.Now(), req.ExpiresIn)
	if err != nil {
		h.fail(c, err)
		return
	}
	tok, id, err := h.s.newAPIToken(c.Request.Context(), currentUser(c), req.Name, exp)
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
		h.fail(c, common.Errf(http.StatusNotFound, "not_found", "no such token"))
		return
	}
	if err := h.s.store.revokeToken(c.Request.Context(), currentUser(c).ID, id); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"revoked": id})
}

// adminTarget resolves the user an admin acts on; admins do not lock
// themselves out.
func (h *apiHandlers) adminTarget(c *gin.Context) (int64, bool) {
	name := c.Param("user")
	if name == currentUser(c).Name {
		h.fail(c, common.Errf(http.StatusConflict, "self", "admins cannot disable or delete themselves"))
		return 0, false
	}
	id, err := h.s.store.userIDByName(c.Request.Context(), name)
	if err != nil {
		h.fail(c, err)
		return 0, false
	}
	return id, true
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
	id, ok := h.adminTarget(c)
	if !ok {
		return
	}
	if err := h.s.store.setDisabled(c.Request.Context(), id, *req.Disabled); err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("user changed", "user", c.Param("user"), "disabled", *req.Disabled, "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"user": c.Param("user"), "disabled": *req.Disabled})
}

func (h *apiHandlers) deleteUser(c *gin.Context) {
	id, ok := h.adminTarget(c)
	if !ok {
		return
	}
	if err := h.s.store.deleteUser(c.Request.Context(), id); err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("user deleted", "user", c.Param("user"), "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"deleted": c.Param("user")})
}

func (h *apiHandlers) listUserTokens(c *gin.Context) {
	id, err := h.s.store.userIDByName(c.Request.Context(), c.Param("user"))
	if err == nil {
		var ts []Token
		if ts, err = h.s.store.tokens(c.Request.Context(), id); err == nil {
			c.JSON(http.StatusOK, gin.H{"tokens": ts})
			return
		}
	}
	h.fail(c, err)
}

func (h *apiHandlers) revokeUserToken(c *gin.Context) {
	tid, perr := strconv.ParseInt(c.Param("id"), 10, 64)
	id, err := h.s.store.userIDByName(c.Request.Context(), c.Param("user"))
	if err == nil && perr != nil {
		err = common.Errf(http.StatusNotFound, "not_found", "no such token")
	}
	if err == nil {
		err = h.s.store.revokeToken(c.Request.Context(), id, tid)
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("token revoked", "user", c.Param("user"), "token", tid, "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"revoked": tid})
}

// login checks a password and answers a new API token (shown once).
func (h *apiHandlers) login(c *gin.Context) {
	var req LoginRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	u, err := h.s.checkPassword(c.Request.Context(), clientIP(c.Request), req.User, req.Password)
	if err != nil {
		h.failLogin(c, err)
		return
	}
	name := req.TokenName
	if name == "" {
		name = "cli"
	}
	if len(name) > 64 || name == sessionTokenName {
		h.fail(c, invalid("invalid_name", "token name must be at most 64 characters"))
		return
	}
	exp, err := tokenExpiry(time.Now(), req.ExpiresIn)
	if err != nil {
		h.fail(c, err)
		return
	}
	tok, hash := newToken()
	id, err := h.s.store.createToken(c.Request.Context(), u.ID, name, hash, exp)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("login", "user", u.Name, "via", "api")
	c.JSON(http.StatusCreated, gin.H{"token": tok, "token_id": id, "user": u})
}

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
	tok := httpapi.BearerToken(c.Request)
	if s, ok := c.Get(sessionKey); ok {
		tok = s.(string)
	}
	if err := h.s.store.revokeTokenHash(c.Request.Context(), hashToken(tok)); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"logged_out": true})
}
