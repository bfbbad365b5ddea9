package dash

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
	"github.com/gin-gonic/gin"
)

func (h *apiHandlers) listDomains(c *gin.Context) {
	ds, err := h.s.domains(c.Request.Context(), appOf(c))
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
	if err := h.s.removeDomain(c.Request.Context(), currentUser(c), appOf(c), c.Param("domain")); err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("domain")})
}

func (h *apiHandlers) drainRoutes(app *gin.RouterGroup) {
	app.GET("/drains", h.listDrains)
	app.POST("/drains", h.addDrain)
	app.DELETE("/drains/:drain", h.removeDrain)
}

func (h *apiHandlers) listDrains(c *gin.Context) {
	list, err := h.s.drains(c.Request.Context(), appOf(c))
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
	dr, err := h.s.addDrain(c.Request.Context(), currentUser(c), appOf(c), req.URL)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"drain": dr})
}

func (h *apiHandlers) removeDrain(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("drain"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(c, common.ErrNotFound)
		return
	}
	url, err := h.s.removeDrain(c.Request.Context(), currentUser(c), appOf(c), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": url})
}
