package dash

import (
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) teamLimitsAPI(c *gin.Context) {
	ctx := c.Request.Context()
	u := currentUser(c)
	var id int64
	err := h.s.store.db.QueryRowContext(ctx, `SELECT t.id FROM teams t WHERE t.name = ? AND
		(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = t.id AND m.user_id = ?))`, c.Param("team"), u.IsAdmin, u.ID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = fmt.Errorf("team %s: %w", c.Param("team"), errNotFound)
	}
	var l TeamLimits
	var usage TeamUsage
	if err == nil {
		l, err = h.s.store.teamLimits(ctx, h.s.store.db, id, false)
	}
	if err == nil {
		usage, err = teamUsage(ctx, h.s.store.db, id, 0)
	}
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
	if err := h.s.store.setTeamLimits(c.Request.Context(), c.Param("team"), req); err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("team limits set", "team", c.Param("team"), "by", currentUser(c).Name,
		"max_apps", req.MaxApps, "max_instances", req.MaxInstances, "max_memory_mb", req.MaxMemoryMB, "max_domain_claims", req.MaxDomainClaims)
	h.teamLimitsAPI(c)
}

func (h *apiHandlers) listTeams(c *gin.Context) {
	ts, err := h.s.store.teams(c.Request.Context(), currentUser(c))
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
	if err := validName("team", req.Name); err != nil {
		h.fail(c, err)
		return
	}
	if err := h.s.store.createTeam(c.Request.Context(), currentUser(c), req.Name); err != nil {
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
	invs, err := h.s.store.invitations(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"invitations": invs})
}

func (h *apiHandlers) acceptInvitation(c *gin.Context) {
	role, err := h.s.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), true)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "role": role})
}

func (h *apiHandlers) declineInvitation(c *gin.Context) {
	if _, err := h.s.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), false); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"declined": c.Param("team")})
}

func (h *apiHandlers) removeMember(c *gin.Context) {
	ctx := c.Request.Context()
	id, err := h.s.store.manageableTeam(ctx, currentUser(c), c.Param("team"))
	if err == nil {
		err = h.s.store.removeMember(ctx, id, c.Param("user"))
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("user")})
}
