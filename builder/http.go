package builder

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/httpapi"
)

// routes is the builder API; every route but /health needs the cluster token.
func (b *Builder) routes() http.Handler {
	r := httpapi.NewEngine()
	r.GET("/health", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	r.GET("/metrics", gin.WrapH(httpapi.MetricsHandler(b.met.reg, b.cfg.ClusterToken)))
	v1 := r.Group("/v1", httpapi.RequireToken(b.cfg.ClusterToken))
	v1.POST("/builds", b.handleCreate)
	v1.GET("/builds/:id", b.handleGet)
	v1.GET("/builds/:id/log", b.handleLog)
	v1.GET("/stacks", b.handleStacks)
	v1.POST("/stacks/build", b.handleBuildStacks)
	v1.POST("/rebuilds", b.handleRebuild)
	return r
}

// handleCreate runs a build of the raw .tar.gz body and answers when done.
func (b *Builder) handleCreate(c *gin.Context) {
	app := c.Query("app")
	if app == "" {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "invalid_app", "query parameter app is required"))
		return
	}
	if c.Request.ContentLength > b.cfg.MaxUploadBytes {
		httpapi.WriteError(c, common.Errf(http.StatusRequestEntityTooLarge, CodeTooLarge, "upload is too large"))
		return
	}
	res, err := b.Build(c.Request.Context(), app, c.Query("created_by"), c.Request.Body)
	if err != nil {
		b.writeError(c, err)
		return
	}
	c.JSON(http.StatusCreated, res)
}

func (b *Builder) handleGet(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		httpapi.WriteError(c, common.Errf(http.StatusNotFound, "not_found", "no such build"))
		return
	}
	res, err := b.Get(c.Request.Context(), id)
	if err != nil {
		b.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

// writeError answers err; errors that are not the client's are logged here,
// since the client only sees "internal".
func (b *Builder) writeError(c *gin.Context, err error) {
	var ae *common.APIError
	if !errors.As(err, &ae) {
		b.log.Error("build request", "err", err, "app", c.Query("app"))
		if db.IsUnavailable(err) {
			err = common.Errf(http.StatusServiceUnavailable, "unavailable", db.UnavailableMessage())
		}
	}
	httpapi.WriteError(c, err)
}
