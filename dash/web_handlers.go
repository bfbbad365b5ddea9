package dash

import (
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/dash/web"
	"github.com/gin-gonic/gin"
)

// webHandlers serve the server-rendered dashboard: each parses its form,
// calls the Service and renders a page or redirects back with a flash.
type webHandlers struct {
	s     *Service
	log   *slog.Logger
	pages map[string]*template.Template
}

// webRequireAdmin lets only admins see the Cluster pages.
func (h *webHandlers) webRequireAdmin(c *gin.Context) {
	if h.s.requireAdmin(currentUser(c)) != nil {
		h.webFail(c, common.Errf(http.StatusForbidden, "forbidden", "only admins may see the cluster"))
		return
	}
	c.Next()
}

// webRoutes registers the server-rendered dashboard.
func (h *webHandlers) routes(r *gin.Engine) {
	static, _ := fs.Sub(web.Static, "static")
	r.StaticFS("/static", http.FS(static))
	r.GET("/", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/apps") })
	r.GET("/login", h.webLoginPage)
	r.POST("/login", h.webLogin)

	w := r.Group("", h.webSession)
	w.POST("/logout", h.webLogout)
	w.GET("/apps", h.webApps)
	w.POST("/apps", h.webCreateApp)
	w.GET("/account", h.webAccount)
	w.POST("/account/tokens", h.webCreateToken)
	w.POST("/account/tokens/:id/revoke", h.webRevokeToken)
	w.POST("/account/invitations/:team/accept", h.webAnswerInvitation)
	w.POST("/account/invitations/:team/decline", h.webAnswerInvitation)
	w.POST("/account/teams", h.webCreateTeam)
	w.POST("/account/teams/:team/members", h.webAddMember)
	w.POST("/account/teams/:team/members/:user/remove", h.webRemoveMember)
	w.POST("/account/users", h.webCreateUser)
	w.POST("/account/password", h.webPassword)
	cl := w.Group("/cluster", h.webRequireAdmin)
	cl.GET("", h.webCluster)
	cl.POST("/nodes/:node/drain", h.webNodeAction)
	cl.POST("/nodes/:node/undrain", h.webNodeAction)
	cl.POST("/nodes/:node/forget", h.webNodeAction)
	h.webAdminRoutes(w.Group("/admin", h.webRequireAdmin))
	cl.POST("/nodes/:node/labels", h.webNodeLabels)
	app := w.Group("/apps/:app", h.webLoadApp)
	app.GET("", h.webApp)
	app.GET("/charts", h.webCharts)
	app.GET("/deploy", h.webDeployPage)
	app.POST("/deploy", h.webDeploy)
	app.POST("/scale", h.webScale)
	app.POST("/env", h.webSetEnv)
	app.POST("/env/unset", h.webUnsetEnv)
	app.POST("/rollback", h.webRollback)
	app.POST("/health", h.webHealth)
	app.POST("/domains", h.webAddDomain)
	app.POST("/domains/:domain/verify", h.webVerifyDomain)
	app.POST("/domains/:domain/delete", h.webRemoveDomain)
	app.POST("/delete", h.webDeleteApp)
	app.POST("/tasks", h.webRunTask)
}

// secureCookies reports whether cookies must be Secure: when users reach
// dash over TLS (directly or via a proxy that says so).
func (h *webHandlers) secureCookies(c *gin.Context) bool {
	return c.Request.TLS != nil || strings.HasPrefix(h.s.cfg.PublicURL, "https://") ||
		c.GetHeader("X-Forwarded-Proto") == "https"
}

func (h *webHandlers) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.secureCookies(c), SameSite: http.SameSiteLaxMode,
	})
}

func (h *webHandlers) render(c *gin.Context, status int, name string, p page) {
	if p.User.Name == "" {
		if u, ok := c.Get(userKey); ok {
			p.User = u.(User)
		}
	}
	if p.CSRF == "" {
		if s, ok := c.Get(sessionKey); ok {
			p.CSRF = csrfToken(s.(string))
		}
	}
	if p.Flash == "" {
		p.Flash = c.Query("flash")
	}
	if p.Error == "" {
		p.Error = c.Query("error")
	}
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	c.Status(status)
	if err := h.pages[name].ExecuteTemplate(c.Writer, "layout", p); err != nil {
		h.log.Error("render", "page", name, "err", err)
	}
}

// webSession admits requests with a valid session cookie (else redirects
// to the login page) and checks the CSRF field of every POST.
func (h *webHandlers) webSession(c *gin.Context) {
	tok, _ := c.Cookie(SessionCookie)
	u, err := h.s.userForToken(c.Request.Context(), tok)
	if err != nil {
		if errors.Is(err, common.ErrUnauthorized) {
			next := ""
			if c.Request.Method == http.MethodGet {
				next = "?next=" + url.QueryEscape(c.Request.URL.RequestURI())
			}
			c.Redirect(http.StatusSeeOther, "/login"+next)
			c.Abort()
			return
		}
		h.webFail(c, err)
		return
	}
	c.Set(userKey, u)
	c.Set(sessionKey, tok)
	// The deploy form streams its upload and checks its own token (see
	// deployUpload); every other form is small and parsed here.
	streamed := c.Request.Method == http.MethodPost && strings.HasSuffix(c.Request.URL.Path, "/deploy")
	if c.Request.Method == http.MethodPost && !streamed && !common.TokenEqual(c.Request.PostFormValue(csrfField), csrfToken(tok)) {
		h.webFail(c, errCSRF)
		return
	}
	c.Next()
}

// webFail renders an error as a plain page with its status.
func (h *webHandlers) webFail(c *gin.Context, err error) {
	ae := apiError(err)
	if ae.Status >= 500 {
		h.log.Error("web request failed", "path", c.FullPath(), "err", err)
	}
	if ae.Status == http.StatusServiceUnavailable {
		// A banner, not a bare error: the user learns that it is the
		// platform, that their apps are fine, and when to retry.
		c.Header("Retry-After", common.RetryAfterSeconds)
		h.render(c, ae.Status, "unavailable", page{Title: "Unavailable", Data: ae.Message})
		c.Abort()
		return
	}
	c.Header("Content-Type", "text/plain; charset=utf-8")
	c.String(ae.Status, "%s (%s)\n", ae.Message, ae.Code)
	c.Abort()
}

// back redirects to path with a flash message, or an error message when
// err is not nil; 4xx errors are shown, others fail the page.
func (h *webHandlers) back(c *gin.Context, path, flash string, err error) {
	q := url.Values{}
	if err != nil {
		ae := apiError(err)
		if ae.Status >= 500 {
			h.webFail(c, err)
			return
		}
		q.Set("error", ae.Message)
	} else if flash != "" {
		q.Set("flash", flash)
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	c.Redirect(http.StatusSeeOther, path)
}

func (h *webHandlers) webLoginPage(c *gin.Context) {
	tok, err := c.Cookie(loginCSRFCookie)
	if err != nil || len(tok) < 32 {
		tok = config.RandomToken(16)
		h.setCookie(c, loginCSRFCookie, tok, 3600)
	}
	h.render(c, http.StatusOK, "login", page{Title: "Log in", CSRF: tok, Data: loginData{Next: c.Query("next")}})
}

func (h *webHandlers) webLogin(c *gin.Context) {
	ck, err := c.Cookie(loginCSRFCookie)
	if err != nil || !common.TokenEqual(c.PostForm(csrfField), ck) {
		h.webFail(c, errCSRF)
		return
	}
	name := c.PostForm("user")
	u, err := h.s.checkPassword(c.Request.Context(), clientIP(c.Request), name, c.PostForm("password"))
	if err != nil {
		ae := apiError(err)
		if ae.Status >= 500 {
			h.webFail(c, err)
			return
		}
		h.render(c, ae.Status, "login", page{Title: "Log in", CSRF: ck, Error: ae.Message,
			Data: loginData{Next: c.PostForm("next"), User: name}})
		return
	}
	tok, err := h.s.startSession(c.Request.Context(), u)
	if err != nil {
		h.webFail(c, err)
		return
	}
	h.setCookie(c, SessionCookie, tok, sessionDays*24*3600)
	h.setCookie(c, loginCSRFCookie, "", -1)
	c.Redirect(http.StatusSeeOther, safeNext(c.PostForm("next")))
}

func (h *webHandlers) webLogout(c *gin.Context) {
	tok := c.MustGet(sessionKey).(string)
	if err := h.s.logout(c.Request.Context(), tok); err != nil {
		h.webFail(c, err)
		return
	}
	h.setCookie(c, SessionCookie, "", -1)
	c.Redirect(http.StatusSeeOther, "/login")
}
