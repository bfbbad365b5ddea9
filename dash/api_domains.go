package dash

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/drain"
	"github.com/dinp/dinp/dash/api"
	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) listDomains(c *gin.Context) {
	ds, err := h.s.store.domains(c.Request.Context(), appOf(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"domains": ds})
}

func (h *apiHandlers) addDomain(c *gin.Context) {
	var req DomainRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	dom, err := h.s.bindDomain(c.Request.Context(), appOf(c), currentUser(c), strings.ToLower(strings.TrimSpace(req.Name)))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"domain": dom})
}

func (h *apiHandlers) verifyDomain(c *gin.Context) {
	dom, err := h.s.checkDomain(c.Request.Context(), appOf(c), c.Param("domain"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"domain": dom})
}

func (h *apiHandlers) removeDomain(c *gin.Context) {
	a := appOf(c)
	if err := h.s.store.removeDomain(c.Request.Context(), a.ID, c.Param("domain"), "domain "+c.Param("domain")+" removed by "+currentUser(c).Name); err != nil {
		h.fail(c, err)
		return
	}
	h.s.publishDesired(c.Request.Context(), a.Name)
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("domain")})
}

func (h *apiHandlers) drainRoutes(app *gin.RouterGroup) {
	app.GET("/drains", h.listDrains)
	app.POST("/drains", h.addDrain)
	app.DELETE("/drains/:drain", h.removeDrain)
}

func (h *apiHandlers) listDrains(c *gin.Context) {
	list, err := h.s.store.drains(c.Request.Context(), appOf(c).ID)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"drains": list})
}

func (h *apiHandlers) addDrain(c *gin.Context) {
	var req api.DrainRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	t, err := drain.Parse(req.URL)
	if err != nil {
		h.fail(c, invalid("invalid_drain", err.Error()))
		return
	}
	if err := h.s.checkDrainHost(c.Request.Context(), t.Host); err != nil {
		h.fail(c, err)
		return
	}
	a, u := appOf(c), currentUser(c)
	dr, err := h.s.store.addDrain(c.Request.Context(), a.ID, t.URL, u.Name)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.log.Info("drain added", "app", a.Name, "url", t.URL, "user", u.Name)
	c.JSON(http.StatusCreated, gin.H{"drain": dr})
}

func (h *apiHandlers) removeDrain(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("drain"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(c, common.ErrNotFound)
		return
	}
	a := appOf(c)
	url, err := h.s.store.removeDrain(c.Request.Context(), a.ID, id, currentUser(c).Name)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": url})
}
