package dash

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) teamLimitsAPI(c *gin.Context) {
	l, usage, err := h.s.teamLimits(c.Request.Context(), currentUser(c), c.Param("team"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "limits": l, "usage": usage})
}

func (h *apiHandlers) setTeamLimits(c *gin.Context) {
	var req TeamLimits
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if req.MaxApps < 0 || req.MaxInstances < 0 || req.MaxMemoryMB < 0 || req.MaxDomainClaims < 0 {
		h.fail(c, invalid("invalid_limits", "limits must not be negative (0: the default)"))
		return
	}
	if err := h.s.setTeamLimits(c.Request.Context(), currentUser(c), c.Param("team"), req); err != nil {
		h.fail(c, err)
		return
	}
	h.teamLimitsAPI(c)
}

func (h *apiHandlers) listTeams(c *gin.Context) {
	ts, err := h.s.teams(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"teams": ts})
}

func (h *apiHandlers) createTeam(c *gin.Context) {
	var req TeamRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if err := h.s.createTeam(c.Request.Context(), currentUser(c), req.Name); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"team": req.Name})
}

func (h *apiHandlers) addMember(c *gin.Context) {
	var req MemberRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	invited, err := h.s.setMember(c.Request.Context(), currentUser(c), c.Param("team"), req)
	if err != nil {
		h.fail(c, err)
		return
	}
	if invited {
		c.JSON(http.StatusAccepted, gin.H{"team": c.Param("team"), "user": req.User, "status": "invited"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "user": req.User, "status": "member"})
}

func (h *apiHandlers) listInvitations(c *gin.Context) {
	invs, err := h.s.invitations(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"invitations": invs})
}

func (h *apiHandlers) acceptInvitation(c *gin.Context) {
	role, err := h.s.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), true)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "role": role})
}

func (h *apiHandlers) declineInvitation(c *gin.Context) {
	if _, err := h.s.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), false); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"declined": c.Param("team")})
}

func (h *apiHandlers) removeMember(c *gin.Context) {
	if err := h.s.removeMember(c.Request.Context(), currentUser(c), c.Param("team"), c.Param("user")); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("user")})
}
