package dash

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

type accountData struct {
	Tokens      []Token
	Sessions    []Session
	Invitations []Invitation
	Teams       []Team
	Users       []User
	NewToken    string
}

func (d *Dash) renderAccount(c *gin.Context, newToken string) {
	ctx, u := c.Request.Context(), currentUser(c)
	data := accountData{NewToken: newToken}
	var err error
	if data.Tokens, err = d.store.tokens(ctx, u.ID); err == nil {
		if data.Sessions, err = d.store.sessions(ctx, u.ID, hashToken(c.MustGet(sessionKey).(string))); err == nil {
			data.Invitations, err = d.store.invitations(ctx, u)
		}
	}
	if err == nil {
		if data.Teams, err = d.store.teams(ctx, u); err == nil && u.IsAdmin {
			data.Users, err = d.store.users(ctx)
		}
	}
	if err != nil {
		d.webFail(c, err)
		return
	}
	d.render(c, http.StatusOK, "account", page{Title: "Account", Data: data})
}

func (d *Dash) webAccount(c *gin.Context) { d.renderAccount(c, "") }

func (d *Dash) webCreateToken(c *gin.Context) {
	tok, _, err := d.newAPIToken(c.Request.Context(), currentUser(c), strings.TrimSpace(c.PostForm("name")))
	if err != nil {
		d.back(c, "/account", "", err)
		return
	}
	// Rendered, not redirected: the secret must not land in a URL.
	d.renderAccount(c, tok)
}

func (d *Dash) webRevokeToken(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err == nil {
		err = d.store.revokeToken(c.Request.Context(), currentUser(c).ID, id)
	}
	d.back(c, "/account", "token revoked", err)
}

func (d *Dash) webAnswerInvitation(c *gin.Context) {
	accept := strings.HasSuffix(c.Request.URL.Path, "/accept")
	_, err := d.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), accept)
	msg := "invitation to " + c.Param("team") + " declined"
	if accept {
		msg = "you joined " + c.Param("team")
	}
	d.back(c, "/account", msg, err)
}

func (d *Dash) webCreateTeam(c *gin.Context) {
	name := strings.TrimSpace(c.PostForm("name"))
	err := validName("team", name)
	if err == nil {
		err = d.store.createTeam(c.Request.Context(), currentUser(c), name)
	}
	d.back(c, "/account", "team "+name+" created", err)
}

func (d *Dash) webAddMember(c *gin.Context) {
	req := MemberRequest{User: strings.TrimSpace(c.PostForm("user")), Role: c.PostForm("role")}
	invited, err := d.setMember(c.Request.Context(), currentUser(c), c.Param("team"), req)
	msg := req.User + " added to " + c.Param("team")
	if invited {
		msg = req.User + " invited to " + c.Param("team") + " (they join when they accept)"
	}
	d.back(c, "/account", msg, err)
}

func (d *Dash) webRemoveMember(c *gin.Context) {
	ctx := c.Request.Context()
	id, err := d.store.manageableTeam(ctx, currentUser(c), c.Param("team"))
	if err == nil {
		err = d.store.removeMember(ctx, id, c.Param("user"))
	}
	d.back(c, "/account", c.Param("user")+" removed from "+c.Param("team"), err)
}

func (d *Dash) webCreateUser(c *gin.Context) {
	if !currentUser(c).IsAdmin {
		d.webFail(c, common.Errf(http.StatusForbidden, "forbidden", "only admins may create users"))
		return
	}
	req := CreateUserRequest{Name: strings.TrimSpace(c.PostForm("name")), Password: c.PostForm("password"),
		Team: strings.TrimSpace(c.PostForm("team")), IsAdmin: c.PostForm("is_admin") == "1"}
	_, err := d.addUser(c.Request.Context(), req)
	d.back(c, "/account", "user "+req.Name+" created", err)
}

func (d *Dash) webPassword(c *gin.Context) {
	ctx, u := c.Request.Context(), currentUser(c)
	_, err := d.checkPassword(ctx, clientIP(c.Request), u.Name, c.PostForm("current"))
	if err == nil {
		err = d.newPassword(c, u, c.PostForm("new"))
	}
	d.back(c, "/account", "password changed; your other sessions and tokens are revoked", err)
}
