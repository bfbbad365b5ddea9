package dash

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"
)

func (d *Dash) listTeams(c *gin.Context) {
	ts, err := d.store.teams(c.Request.Context(), currentUser(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"teams": ts})
}

// TeamRequest is the body of POST /api/v1/teams.
type TeamRequest struct {
	Name string `json:"name"`
}

func (d *Dash) createTeam(c *gin.Context) {
	var req TeamRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if err := validName("team", req.Name); err != nil {
		d.fail(c, err)
		return
	}
	if err := d.store.createTeam(c.Request.Context(), currentUser(c), req.Name); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"team": req.Name})
}

// MemberRequest is the body of POST /api/v1/teams/{team}/members.
type MemberRequest struct {
	User string `json:"user"`
	Role string `json:"role,omitempty"` // member (default) or owner
}

func (d *Dash) addMember(c *gin.Context) {
	var req MemberRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	invited, err := d.setMember(c.Request.Context(), currentUser(c), c.Param("team"), req)
	if err != nil {
		d.fail(c, err)
		return
	}
	if invited {
		c.JSON(http.StatusAccepted, gin.H{"team": c.Param("team"), "user": req.User, "status": "invited"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "user": req.User, "status": "member"})
}

// setMember changes a member's role, or invites a user who is not a member:
// they join when they accept. The answer for an unknown user name is the
// same invitation (nothing is stored), so the call tells no one which names
// exist. Admins add members directly.
func (d *Dash) setMember(ctx context.Context, u User, team string, req MemberRequest) (invited bool, err error) {
	if req.Role == "" {
		req.Role = "member"
	}
	if req.Role != "member" && req.Role != "owner" {
		return false, invalid("invalid_role", "role must be member or owner")
	}
	if err := validName("user", req.User); err != nil {
		return false, err
	}
	id, err := d.store.manageableTeam(ctx, u, team)
	if err != nil {
		return false, err
	}
	return d.store.setMember(ctx, id, u, req.User, req.Role)
}

func (d *Dash) listInvitations(c *gin.Context) {
	invs, err := d.store.invitations(c.Request.Context(), currentUser(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"invitations": invs})
}

func (d *Dash) acceptInvitation(c *gin.Context) {
	role, err := d.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), true)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "role": role})
}

func (d *Dash) declineInvitation(c *gin.Context) {
	if _, err := d.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), false); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"declined": c.Param("team")})
}

func (d *Dash) removeMember(c *gin.Context) {
	ctx := c.Request.Context()
	id, err := d.store.manageableTeam(ctx, currentUser(c), c.Param("team"))
	if err == nil {
		err = d.store.removeMember(ctx, id, c.Param("user"))
	}
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("user")})
}
