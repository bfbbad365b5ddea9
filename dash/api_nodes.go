package dash

import (
	"net/http"

	"github.com/dinp/dinp/dash/api"
	"github.com/gin-gonic/gin"
)

// getCluster answers the platform's components: the leader, servers,
// routers with their route version and lag, hm members with their share,
// registries with their disk use.
func (h *apiHandlers) getCluster(c *gin.Context) {
	cl, err := h.s.cluster(c.Request.Context())
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, cl)
}

// putNodeLabels changes the labels an admin set on a node: each key of
// the body's labels is set to its value, or removed when the value is null
// (a JSON merge patch of the admin labels, so repeating it changes
// nothing). The agent's own labels are never touched: an admin label wins
// over the agent's on the same key, and removing it lets the agent's show
// again. Placement honours the result from the leader's next round.
func (h *apiHandlers) putNodeLabels(c *gin.Context) {
	ctx := c.Request.Context()
	var req api.NodeLabelsRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	id := c.Param("node")
	if err := h.s.setNodeLabels(ctx, id, req.Labels, currentUser(c).Name); err != nil {
		h.fail(c, err)
		return
	}
	n, err := h.s.node(ctx, id)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"node": n})
}

func (h *apiHandlers) nodeRoutes(api *gin.RouterGroup) {
	nodes := api.Group("/nodes", h.requireAdmin)
	nodes.GET("", h.listNodes)
	nodes.GET("/:node", h.showNode)
	nodes.POST("/:node/drain", h.nodeActionAPI(nodeDrain))
	nodes.POST("/:node/undrain", h.nodeActionAPI(nodeUndrain))
	nodes.DELETE("/:node", h.nodeActionAPI(nodeForget))
	nodes.PUT("/:node/labels", h.putNodeLabels)
	api.GET("/cluster", h.requireAdmin, h.getCluster)
}

// listNodes answers every node with its state, and the leading server.
func (h *apiHandlers) listNodes(c *gin.Context) {
	ctx := c.Request.Context()
	list, err := h.s.nodes(ctx, currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	leader, err := h.s.leader(ctx)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"nodes": list, "leader": leader})
}

func (h *apiHandlers) showNode(c *gin.Context) {
	ctx := c.Request.Context()
	n, err := h.s.node(ctx, c.Param("node"))
	if err != nil {
		h.fail(c, err)
		return
	}
	evs, err := h.s.nodeEvents(ctx, currentUser(c), n.ID)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"node": n, "events": evs})
}

// nodeActionAPI answers one node action: the node as it is now, or 204 when
// it was forgotten.
func (h *apiHandlers) nodeActionAPI(action string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		id := c.Param("node")
		if err := h.s.nodeAction(ctx, id, action, currentUser(c).Name); err != nil {
			h.fail(c, err)
			return
		}
		if action == nodeForget {
			c.Status(http.StatusNoContent)
			return
		}
		n, err := h.s.node(ctx, id)
		if err != nil {
			h.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"node": n})
	}
}
