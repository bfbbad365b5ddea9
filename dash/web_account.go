package dash

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

type accountData struct {
	account
	NewToken string
}

func (h *webHandlers) renderAccount(c *gin.Context, newToken string) {
	ctx, u := c.Request.Context(), currentUser(c)
	a, err := h.s.account(ctx, u, c.MustGet(sessionKey).(string))
	data := accountData{account: a, NewToken: newToken}
	if err != nil {
		h.webFail(c, err)
		return
	}
	h.render(c, http.StatusOK, "account", page{Title: "Account", Data: data})
}

func (h *webHandlers) webAccount(c *gin.Context) { h.renderAccount(c, "") }

func (h *webHandlers) webCreateToken(c *gin.Context) {
	tok, _, err := h.s.newAPIToken(c.Request.Context(), currentUser(c), strings.TrimSpace(c.PostForm("name")))
	if err != nil {
		h.back(c, "/account", "", err)
		return
	}
	// Rendered, not redirected: the secret must not land in a URL.
	h.renderAccount(c, tok)
}

func (h *webHandlers) webRevokeToken(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err == nil {
		err = h.s.revokeToken(c.Request.Context(), currentUser(c), id)
	}
	h.back(c, "/account", "token revoked", err)
}

func (h *webHandlers) webAnswerInvitation(c *gin.Context) {
	accept := strings.HasSuffix(c.Request.URL.Path, "/accept")
	_, err := h.s.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), accept)
	msg := "invitation to " + c.Param("team") + " declined"
	if accept {
		msg = "you joined " + c.Param("team")
	}
	h.back(c, "/account", msg, err)
}

func (h *webHandlers) webCreateTeam(c *gin.Context) {
	name := strings.TrimSpace(c.PostForm("name"))
	err := h.s.createTeam(c.Request.Context(), currentUser(c), name)
	h.back(c, "/account", "team "+name+" created", err)
}

func (h *webHandlers) webAddMember(c *gin.Context) {
	req := MemberRequest{User: strings.TrimSpace(c.PostForm("user")), Role: c.PostForm("role")}
	invited, err := h.s.setMember(c.Request.Context(), currentUser(c), c.Param("team"), req)
	msg := req.User + " added to " + c.Param("team")
	if invited {
		msg = req.User + " invited to " + c.Param("team") + " (they join when they accept)"
	}
	h.back(c, "/account", msg, err)
}

func (h *webHandlers) webRemoveMember(c *gin.Context) {
	err := h.s.removeMember(c.Request.Context(), currentUser(c), c.Param("team"), c.Param("user"))
	h.back(c, "/account", c.Param("user")+" removed from "+c.Param("team"), err)
}

func (h *webHandlers) webCreateUser(c *gin.Context) {
	if h.s.requireAdmin(currentUser(c)) != nil {
		h.webFail(c, common.Errf(http.StatusForbidden, "forbidden", "only admins may create users"))
		return
	}
	req := CreateUserRequest{Name: strings.TrimSpace(c.PostForm("name")), Password: c.PostForm("password"),
		Team: strings.TrimSpace(c.PostForm("team")), IsAdmin: c.PostForm("is_admin") == "1"}
	_, err := h.s.createUser(c.Request.Context(), currentUser(c), req)
	h.back(c, "/account", "user "+req.Name+" created", err)
}

func (h *webHandlers) webPassword(c *gin.Context) {
	ctx, u := c.Request.Context(), currentUser(c)
	_, err := h.s.checkPassword(ctx, clientIP(c.Request), u.Name, c.PostForm("current"))
	if err == nil {
		err = h.s.newPassword(ctx, u, requestToken(c), c.PostForm("new"))
	}
	h.back(c, "/account", "password changed; your other sessions and tokens are revoked", err)
}
