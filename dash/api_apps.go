package dash

import (
	"net/http"
	"strconv"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) createApp(c *gin.Context) {
	var req CreateAppRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	a, err := h.s.newApp(c.Request.Context(), currentUser(c), req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"app": h.s.appView(a)})
}

func (h *apiHandlers) listApps(c *gin.Context) {
	out, err := h.s.apps(c.Request.Context(), currentUser(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"apps": out})
}

func (h *apiHandlers) showApp(c *gin.Context) {
	out, err := h.s.appDetail(c.Request.Context(), appOf(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (h *apiHandlers) scale(c *gin.Context) {
	var req ScaleRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if req.Instances == nil && req.MemoryMB == nil && req.CPUShares == nil {
		h.fail(c, invalid("nothing_to_change", "give instances, memory_mb or cpu_shares"))
		return
	}
	h.changed(h.s.scale(c.Request.Context(), currentUser(c), appOf(c), req.Instances, req.MemoryMB, req.CPUShares))(c)
}

func (h *apiHandlers) getEnv(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"env": appOf(c).Env})
}

func (h *apiHandlers) putEnv(c *gin.Context) {
	var req EnvRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	h.changed(h.s.setEnv(c.Request.Context(), currentUser(c), appOf(c), req.Set, req.Unset))(c)
}

// changed answers a desired-state change: the app, its env and the new
// release when one was made.
func (h *apiHandlers) changed(updated appRow, rel *Release, err error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err != nil {
			h.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"app": h.s.appView(updated), "env": updated.Env, "release": rel})
	}
}

func (h *apiHandlers) listReleases(c *gin.Context) {
	rels, err := h.s.releases(c.Request.Context(), appOf(c), listLimit)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"releases": rels})
}

func (h *apiHandlers) rollback(c *gin.Context) {
	var req RollbackRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if req.Version < 0 {
		h.fail(c, invalid("invalid_version", "version must be positive"))
		return
	}
	rel, err := h.s.doRollback(c.Request.Context(), appOf(c), currentUser(c), req.Version)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"release": rel})
}

func (h *apiHandlers) deleteApp(c *gin.Context) {
	a := appOf(c)
	if err := h.s.removeApp(c.Request.Context(), a, currentUser(c)); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deleted": a.Name})
}

func (h *apiHandlers) listEvents(c *gin.Context) {
	evs, err := h.s.events(c.Request.Context(), appOf(c), listLimit)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"events": evs})
}

func (h *apiHandlers) getHealth(c *gin.Context) {
	hc := appOf(c).Health
	c.JSON(http.StatusOK, gin.H{"health": hc, "effective": hc.WithDefaults()})
}

func (h *apiHandlers) putHealth(c *gin.Context) {
	var hc common.HealthConfig
	if err := decodeJSON(c, &hc); err != nil {
		h.fail(c, err)
		return
	}
	if err := h.s.setHealth(c.Request.Context(), appOf(c), currentUser(c), hc); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"health": hc, "effective": hc.WithDefaults()})
}

// getMetrics serves GET /apps/{app}/metrics?window=1h|6h|24h.
func (h *apiHandlers) getMetrics(c *gin.Context) {
	m, err := h.s.appMetrics(c.Request.Context(), appOf(c), c.DefaultQuery("window", "1h"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, m)
}

func (h *apiHandlers) getReleaseStatus(c *gin.Context) {
	v, err := strconv.Atoi(c.Param("version"))
	if err != nil || v <= 0 {
		h.fail(c, invalid("invalid_version", "version must be a positive integer"))
		return
	}
	st, err := h.s.releaseStatus(c.Request.Context(), appOf(c), v)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// putRoot lets an admin allow or revoke root for one app. Instances run as
// an unprivileged user unless allowed; the flag is snapshot in a new
// release (when the app has one), which rolls out like an env change, so
// revoking takes effect on running instances too.
func (h *apiHandlers) putRoot(c *gin.Context) {
	var req RootRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	if req.AllowRoot == nil {
		h.fail(c, invalid("invalid_root", "allow_root (true or false) is required"))
		return
	}
	h.changed(h.s.setRoot(c.Request.Context(), currentUser(c), appOf(c), *req.AllowRoot))(c)
}
