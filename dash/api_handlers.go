package dash

import (
	"log/slog"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/gin-gonic/gin"
)

// apiHandlers serve the JSON API (/api/v1): each parses its request, calls
// the Service and writes JSON; fail writes every error.
type apiHandlers struct {
	s   *Service
	log *slog.Logger
}

func (h *apiHandlers) whoami(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"user": currentUser(c)})
}

// loadApp resolves :app for the current user; apps of other teams answer
// 404 exactly like apps that do not exist.
func (h *apiHandlers) loadApp(c *gin.Context) {
	a, err := h.s.app(c.Request.Context(), currentUser(c), c.Param("app"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.Set(appKey, a)
	c.Next()
}

// authenticate admits requests bearing a valid, unrevoked API token, or a
// session cookie (then unsafe methods need the CSRF header), and stores the
// user in the context.
func (h *apiHandlers) authenticate(c *gin.Context) {
	tok := httpapi.BearerToken(c.Request)
	viaCookie := false
	if tok == "" {
		if ck, err := c.Cookie(SessionCookie); err == nil {
			tok, viaCookie = ck, true
		}
	}
	u, err := h.s.userForToken(c.Request.Context(), tok)
	if err != nil {
		h.fail(c, err)
		return
	}
	if viaCookie && !safeMethod(c.Request.Method) && !common.TokenEqual(c.GetHeader(CSRFHeader), csrfToken(tok)) {
		h.fail(c, errCSRF)
		return
	}
	if viaCookie {
		c.Set(sessionKey, tok)
	}
	c.Set(userKey, u)
	c.Next()
}

// fail answers err, logging internal errors (whose detail clients never see).
func (h *apiHandlers) fail(c *gin.Context, err error) {
	ae := apiError(err)
	if ae.Status >= 500 {
		h.log.Error("request failed", "method", c.Request.Method, "path", c.FullPath(), "err", err)
	}
	httpapi.WriteError(c, ae)
}

// apiRoutes registers /api/v1; openapi.json must describe every one (a
// test checks).
func (h *apiHandlers) routes(r *gin.Engine) {
	v1 := r.Group("/api/v1")
	v1.GET("/health", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	v1.GET("/openapi.json", serveOpenAPI)
	v1.POST("/login", h.login)

	api := v1.Group("", h.authenticate)
	api.POST("/logout", h.logout)
	api.GET("/user", h.whoami)
	api.PUT("/user/password", h.changePassword)
	api.GET("/users", h.requireAdmin, h.listUsers)
	api.POST("/users", h.requireAdmin, h.createUser)
	api.PATCH("/users/:user", h.requireAdmin, h.patchUser)
	api.DELETE("/users/:user", h.requireAdmin, h.deleteUser)
	api.GET("/users/:user/tokens", h.requireAdmin, h.listUserTokens)
	api.DELETE("/users/:user/tokens/:id", h.requireAdmin, h.revokeUserToken)
	api.GET("/teams", h.listTeams)
	api.POST("/teams", h.createTeam)
	api.POST("/teams/:team/members", h.addMember)
	api.DELETE("/teams/:team/members/:user", h.removeMember)
	api.GET("/teams/:team/limits", h.teamLimitsAPI)
	api.PUT("/teams/:team/limits", h.requireAdmin, h.setTeamLimits)
	api.GET("/invitations", h.listInvitations)
	api.POST("/invitations/:team/accept", h.acceptInvitation)
	api.POST("/invitations/:team/decline", h.declineInvitation)
	api.GET("/tokens", h.listTokens)
	api.POST("/tokens", h.createToken)
	api.DELETE("/tokens/:id", h.revokeToken)
	h.nodeRoutes(api)
	api.GET("/builds/:id", h.showBuild)
	api.GET("/builds/:id/log", h.buildLog)
	api.GET("/tasks/:id", h.showTask)
	api.GET("/tasks/:id/log", h.taskLog)
	api.GET("/apps", h.listApps)
	api.POST("/apps", h.createApp)
	app := api.Group("/apps/:app", h.loadApp)
	app.GET("", h.showApp)
	app.PATCH("", h.scale)
	app.DELETE("", h.deleteApp)
	app.POST("/deploy", h.deploy)
	app.POST("/rebuild", h.rebuild)
	app.POST("/scale", h.scale)
	app.GET("/env", h.getEnv)
	app.PUT("/env", h.putEnv)
	app.PATCH("/env", h.putEnv)
	app.GET("/releases", h.listReleases)
	app.GET("/releases/:version/status", h.getReleaseStatus)
	app.POST("/rollback", h.rollback)
	app.GET("/events", h.listEvents)
	app.GET("/metrics", h.getMetrics)
	app.GET("/builds", h.listBuilds)
	app.GET("/logs", h.appLogs)
	app.POST("/tasks", h.runTask)
	app.GET("/tasks", h.listTasks)
	app.GET("/tasks/:id", h.showTask)
	app.GET("/tasks/:id/log", h.taskLog)
	app.GET("/health", h.getHealth)
	app.PUT("/health", h.putHealth)
	app.PUT("/root", h.requireAdmin, h.putRoot)
	app.GET("/domains", h.listDomains)
	app.POST("/domains", h.addDomain)
	app.POST("/domains/:domain/verify", h.verifyDomain)
	app.DELETE("/domains/:domain", h.removeDomain)
	h.drainRoutes(app)
}

// requireAdmin runs the Service's admin check before the handler parses
// anything.
func (h *apiHandlers) requireAdmin(c *gin.Context) {
	if err := h.s.requireAdmin(currentUser(c)); err != nil {
		h.fail(c, err)
		return
	}
	c.Next()
}
