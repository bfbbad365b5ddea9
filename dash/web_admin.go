package dash

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

// The admin's Users page (/admin): every user with their tokens (disable,
// enable, delete, revoke a token) and every team with its limits and usage
// (set the limits). The same store calls as the API's /users and
// /teams/{team}/limits; forms post and redirect back with a flash.

// adminUser is one row of the Users page.
type adminUser struct {
	Name     string
	IsAdmin  bool
	Disabled bool
	Tokens   []Token // live ones (not revoked)
}

// adminTeam is one row of the teams table.
type adminTeam struct {
	Name   string
	Limits TeamLimits
	Usage  TeamUsage
}

type adminData struct {
	Users []adminUser
	Teams []adminTeam
}

// webNodeLabels runs the label form of the Cluster page ("zone=b gpu-").
func (h *webHandlers) webNodeLabels(c *gin.Context) {
	id := c.Param("node")
	patch, err := common.ParseLabelArgs(strings.Fields(c.PostForm("labels")))
	if err != nil {
		err = invalid("bad_labels", err.Error())
	} else {
		err = h.s.setNodeLabels(c.Request.Context(), id, patch, currentUser(c).Name)
	}
	h.back(c, "/cluster", "node "+id+" labels changed", err)
}

// webCluster shows every node with its memory reserved, the leader and the
// node actions.
func (h *webHandlers) webCluster(c *gin.Context) {
	ctx := c.Request.Context()
	list, err := h.s.nodes(ctx, currentUser(c))
	if err != nil {
		h.webFail(c, err)
		return
	}
	cl, err := h.s.cluster(ctx)
	if err != nil {
		h.webFail(c, err)
		return
	}
	h.render(c, http.StatusOK, "cluster", page{Title: "Cluster", Data: clusterData{Nodes: list, Leader: cl.Leader, Cluster: cl}})
}

// webNodeAction runs the drain, undrain or forget form of the Cluster page.
func (h *webHandlers) webNodeAction(c *gin.Context) {
	id := c.Param("node")
	action := c.FullPath()[strings.LastIndexByte(c.FullPath(), '/')+1:]
	flash := map[string]string{
		nodeDrain:   "node " + id + " draining: its instances move elsewhere",
		nodeUndrain: "node " + id + " takes instances again",
		nodeForget:  "node " + id + " forgotten",
	}[action]
	h.back(c, "/cluster", flash, h.s.nodeAction(c.Request.Context(), id, action, currentUser(c).Name))
}

func (h *webHandlers) webAdminRoutes(g *gin.RouterGroup) {
	g.GET("", h.webAdmin)
	g.POST("/users/:user/disable", h.webAdminUser)
	g.POST("/users/:user/enable", h.webAdminUser)
	g.POST("/users/:user/delete", h.webAdminUser)
	g.POST("/users/:user/tokens/:id/revoke", h.webAdminRevoke)
	g.POST("/teams/:team/limits", h.webAdminLimits)
}

func (h *webHandlers) webAdmin(c *gin.Context) {
	data, err := h.s.adminPage(c.Request.Context())
	if err != nil {
		h.webFail(c, err)
		return
	}
	h.render(c, http.StatusOK, "admin", page{Title: "Users", Data: data})
}

// webAdminUser runs the disable, enable and delete forms.
func (h *webHandlers) webAdminUser(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("user")
	action := c.FullPath()[len("/admin/users/:user/"):]
	var err error
	switch action {
	case "disable", "enable":
		err = h.s.setDisabled(ctx, currentUser(c), name, action == "disable")
	case "delete":
		err = h.s.deleteUser(ctx, currentUser(c), name)
	}
	h.back(c, "/admin", map[string]string{
		"disable": "user " + name + " disabled; their tokens and sessions are revoked",
		"enable":  "user " + name + " enabled",
		"delete":  "user " + name + " deleted; their apps stay with their teams",
	}[action], err)
}

func (h *webHandlers) webAdminRevoke(c *gin.Context) {
	ctx := c.Request.Context()
	u, name := currentUser(c), c.Param("user")
	tid, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		// An unknown user is named before a malformed token id.
		if _, err = h.s.userID(ctx, u, name); err == nil {
			err = fmt.Errorf("token %s: %w", c.Param("id"), errNotFound)
		}
	} else {
		err = h.s.revokeUserToken(ctx, u, name, tid)
	}
	h.back(c, "/admin", "token revoked", err)
}

func (h *webHandlers) webAdminLimits(c *gin.Context) {
	num := func(k string) (int64, error) {
		v := c.PostForm(k)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, invalid("invalid_limits", k+" must be a number (0 or empty: the default)")
		}
		return n, nil
	}
	var l TeamLimits
	var vals [4]int64
	var err error
	for i, k := range []string{"max_apps", "max_instances", "max_memory_mb", "max_domain_claims"} {
		if err == nil {
			vals[i], err = num(k)
		}
	}
	l.MaxApps, l.MaxInstances, l.MaxMemoryMB, l.MaxDomainClaims = int(vals[0]), int(vals[1]), vals[2], int(vals[3])
	if err == nil {
		err = h.s.setTeamLimits(c.Request.Context(), currentUser(c), c.Param("team"), l)
	}
	h.back(c, "/admin", "limits of team "+c.Param("team")+" saved", err)
}
