package dash

import (
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/dash/web"
)

// loginCSRFCookie carries the double-submit token of the login form, the
// one form posted before a session exists.
const loginCSRFCookie = "dinp_login_csrf"

// page is what every template gets.
type page struct {
	Title string
	User  User
	CSRF  string
	Flash string
	Error string
	Data  any
}

// templates parses layout.html with each page, once.
func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12]
			}
			return s
		},
		"deref": func(p *int) int {
			if p == nil {
				return 0
			}
			return *p
		},
		"ago": ago,
		"bytes": func(n int64) string {
			switch {
			case n >= 1<<30:
				return strconv.FormatFloat(float64(n)/(1<<30), 'f', 2, 64) + " GB"
			case n >= 1<<20:
				return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MB"
			case n >= 1<<10:
				return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " kB"
			}
			return strconv.FormatInt(n, 10) + " B"
		},
		"appState":   appState,
		"derefFloat": func(f *float64) float64 { return *f },
		"pct":        func(f *float64) float64 { return 100 * *f },
		"deref64": func(p *int64) int64 {
			if p == nil {
				return 0
			}
			return *p
		},
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "apps", "app", "deploy", "account", "unavailable", "cluster", "admin"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(web.Templates, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// ago renders a past time shortly (a time.Time or *time.Time).
func ago(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x == nil {
			return ""
		}
		t = *x
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return t.UTC().Format("2006-01-02")
}

// appState summarises an app for the list: not deployed, stopped, serving
// (all instances running), starting (some), crashed (none, and the
// current release's instances keep crashing) or down (none).
func appState(a AppSummary) string {
	switch {
	case a.CurrentRelease == nil:
		return "new"
	case a.Instances == 0:
		return "stopped"
	case a.Running >= a.Instances:
		return "serving"
	case a.Running > 0:
		return "starting"
	case a.Crashed > 0:
		return "crashed"
	}
	return "down"
}

// webRoutes registers the server-rendered dashboard.
func (d *Dash) webRoutes(r *gin.Engine) {
	static, _ := fs.Sub(web.Static, "static")
	r.StaticFS("/static", http.FS(static))
	r.GET("/", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/apps") })
	r.GET("/login", d.webLoginPage)
	r.POST("/login", d.webLogin)

	w := r.Group("", d.webSession)
	w.POST("/logout", d.webLogout)
	w.GET("/apps", d.webApps)
	w.POST("/apps", d.webCreateApp)
	w.GET("/account", d.webAccount)
	w.POST("/account/tokens", d.webCreateToken)
	w.POST("/account/tokens/:id/revoke", d.webRevokeToken)
	w.POST("/account/invitations/:team/accept", d.webAnswerInvitation)
	w.POST("/account/invitations/:team/decline", d.webAnswerInvitation)
	w.POST("/account/teams", d.webCreateTeam)
	w.POST("/account/teams/:team/members", d.webAddMember)
	w.POST("/account/teams/:team/members/:user/remove", d.webRemoveMember)
	w.POST("/account/users", d.webCreateUser)
	w.POST("/account/password", d.webPassword)
	cl := w.Group("/cluster", d.webRequireAdmin)
	cl.GET("", d.webCluster)
	cl.POST("/nodes/:node/drain", d.webNodeAction)
	cl.POST("/nodes/:node/undrain", d.webNodeAction)
	cl.POST("/nodes/:node/forget", d.webNodeAction)
	d.webAdminRoutes(w.Group("/admin", d.webRequireAdmin))
	cl.POST("/nodes/:node/labels", d.webNodeLabels)
	app := w.Group("/apps/:app", d.webLoadApp)
	app.GET("", d.webApp)
	app.GET("/charts", d.webCharts)
	app.GET("/deploy", d.webDeployPage)
	app.POST("/deploy", d.webDeploy)
	app.POST("/scale", d.webScale)
	app.POST("/env", d.webSetEnv)
	app.POST("/env/unset", d.webUnsetEnv)
	app.POST("/rollback", d.webRollback)
	app.POST("/health", d.webHealth)
	app.POST("/domains", d.webAddDomain)
	app.POST("/domains/:domain/verify", d.webVerifyDomain)
	app.POST("/domains/:domain/delete", d.webRemoveDomain)
	app.POST("/delete", d.webDeleteApp)
	app.POST("/tasks", d.webRunTask)
}

// secureCookies reports whether cookies must be Secure: when users reach
// dash over TLS (directly or via a proxy that says so).
func (d *Dash) secureCookies(c *gin.Context) bool {
	return c.Request.TLS != nil || strings.HasPrefix(d.cfg.PublicURL, "https://") ||
		c.GetHeader("X-Forwarded-Proto") == "https"
}

func (d *Dash) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: d.secureCookies(c), SameSite: http.SameSiteLaxMode,
	})
}

func (d *Dash) render(c *gin.Context, status int, name string, p page) {
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
	if err := d.pages[name].ExecuteTemplate(c.Writer, "layout", p); err != nil {
		d.log.Error("render", "page", name, "err", err)
	}
}

// webSession admits requests with a valid session cookie (else redirects
// to the login page) and checks the CSRF field of every POST.
func (d *Dash) webSession(c *gin.Context) {
	tok, _ := c.Cookie(SessionCookie)
	u, err := d.userForToken(c.Request.Context(), tok)
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
		d.webFail(c, err)
		return
	}
	c.Set(userKey, u)
	c.Set(sessionKey, tok)
	// The deploy form streams its upload and checks its own token (see
	// deployUpload); every other form is small and parsed here.
	streamed := c.Request.Method == http.MethodPost && strings.HasSuffix(c.Request.URL.Path, "/deploy")
	if c.Request.Method == http.MethodPost && !streamed && !common.TokenEqual(c.Request.PostFormValue(csrfField), csrfToken(tok)) {
		d.webFail(c, errCSRF)
		return
	}
	c.Next()
}

// webFail renders an error as a plain page with its status.
func (d *Dash) webFail(c *gin.Context, err error) {
	ae := apiError(err)
	if ae.Status >= 500 {
		d.log.Error("web request failed", "path", c.FullPath(), "err", err)
	}
	if ae.Status == http.StatusServiceUnavailable {
		// A banner, not a bare error: the user learns that it is the
		// platform, that their apps are fine, and when to retry.
		c.Header("Retry-After", common.RetryAfterSeconds)
		d.render(c, ae.Status, "unavailable", page{Title: "Unavailable", Data: ae.Message})
		c.Abort()
		return
	}
	c.Header("Content-Type", "text/plain; charset=utf-8")
	c.String(ae.Status, "%s (%s)\n", ae.Message, ae.Code)
	c.Abort()
}

// back redirects to path with a flash message, or an error message when
// err is not nil; 4xx errors are shown, others fail the page.
func (d *Dash) back(c *gin.Context, path, flash string, err error) {
	q := url.Values{}
	if err != nil {
		ae := apiError(err)
		if ae.Status >= 500 {
			d.webFail(c, err)
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

// safeNext keeps a post-login redirect on this site: a path, never a
// scheme or host, and nothing a browser would strip or turn into one
// (control characters, spaces, backslashes: "/\t/evil.example" is
// "//evil.example" to a browser).
func safeNext(next string) string {
	const home = "/apps"
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\ ") {
		return home
	}
	for _, r := range next {
		if r < 0x20 || r == 0x7f {
			return home
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") ||
		strings.HasPrefix(u.Path, "//") || strings.ContainsAny(u.Path, "\\") {
		return home
	}
	for _, r := range u.Path {
		if r < 0x20 || r == 0x7f {
			return home
		}
	}
	return next
}

type loginData struct{ Next, User string }

func (d *Dash) webLoginPage(c *gin.Context) {
	tok, err := c.Cookie(loginCSRFCookie)
	if err != nil || len(tok) < 32 {
		tok = config.RandomToken(16)
		d.setCookie(c, loginCSRFCookie, tok, 3600)
	}
	d.render(c, http.StatusOK, "login", page{Title: "Log in", CSRF: tok, Data: loginData{Next: c.Query("next")}})
}

func (d *Dash) webLogin(c *gin.Context) {
	ck, err := c.Cookie(loginCSRFCookie)
	if err != nil || !common.TokenEqual(c.PostForm(csrfField), ck) {
		d.webFail(c, errCSRF)
		return
	}
	name := c.PostForm("user")
	u, err := d.checkPassword(c.Request.Context(), clientIP(c.Request), name, c.PostForm("password"))
	if err != nil {
		ae := apiError(err)
		if ae.Status >= 500 {
			d.webFail(c, err)
			return
		}
		d.render(c, ae.Status, "login", page{Title: "Log in", CSRF: ck, Error: ae.Message,
			Data: loginData{Next: c.PostForm("next"), User: name}})
		return
	}
	tok, hash := newToken()
	if _, err := d.store.createToken(c.Request.Context(), u.ID, sessionTokenName, hash); err != nil {
		d.webFail(c, err)
		return
	}
	d.setCookie(c, SessionCookie, tok, sessionDays*24*3600)
	d.setCookie(c, loginCSRFCookie, "", -1)
	d.log.Info("login", "user", u.Name, "via", "web")
	c.Redirect(http.StatusSeeOther, safeNext(c.PostForm("next")))
}

func (d *Dash) webLogout(c *gin.Context) {
	tok := c.MustGet(sessionKey).(string)
	if err := d.store.revokeTokenHash(c.Request.Context(), hashToken(tok)); err != nil {
		d.webFail(c, err)
		return
	}
	d.setCookie(c, SessionCookie, "", -1)
	c.Redirect(http.StatusSeeOther, "/login")
}

type appsData struct {
	Apps   []AppSummary
	Teams  []Team
	Sparks map[string]template.HTML // app → request rate sparkline
}

func (d *Dash) webApps(c *gin.Context) {
	ctx, u := c.Request.Context(), currentUser(c)
	rows, err := d.store.apps(ctx, u)
	if err != nil {
		d.webFail(c, err)
		return
	}
	teams, err := d.store.teams(ctx, u)
	if err != nil {
		d.webFail(c, err)
		return
	}
	data := appsData{Teams: teams}
	names := make([]string, 0, len(rows))
	for _, a := range rows {
		data.Apps = append(data.Apps, summarize(d.appView(a), a))
		names = append(names, a.Name)
	}
	data.Sparks = d.appSparklines(ctx, names)
	d.render(c, http.StatusOK, "apps", page{Title: "Apps", Data: data})
}

// formInt reads an optional integer field; empty means nil.
func formInt(c *gin.Context, name string) (*int, error) {
	s := strings.TrimSpace(c.PostForm(name))
	if s == "" {
		return nil, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return nil, invalid("invalid_"+name, name+" must be a number")
	}
	return &v, nil
}

func (d *Dash) webCreateApp(c *gin.Context) {
	req := CreateAppRequest{Name: strings.TrimSpace(c.PostForm("name")), Team: c.PostForm("team"), HealthPath: strings.TrimSpace(c.PostForm("health_path"))}
	var err error
	if req.Instances, err = formInt(c, "instances"); err == nil {
		req.MemoryMB, err = formInt(c, "memory_mb")
	}
	if err == nil {
		_, err = d.newApp(c.Request.Context(), currentUser(c), req)
	}
	if err != nil {
		d.back(c, "/apps", "", err)
		return
	}
	d.back(c, "/apps/"+req.Name, "created "+req.Name+"; deploy it next", nil)
}

func (d *Dash) webLoadApp(c *gin.Context) {
	a, err := d.store.app(c.Request.Context(), currentUser(c), c.Param("app"))
	if err != nil {
		d.webFail(c, err)
		return
	}
	c.Set(appKey, a)
	c.Next()
}

type appData struct {
	AppDetail
	Releases []Release
	Builds   []BuildInfo
	Events   []Event
	Domains  []Domain
	EnvKeys  []string
	Health   common.HealthConfig
	Logs     []string
	Tasks    []Task
	Window   string        // of the charts: 1h, 6h or 24h
	Charts   template.HTML // the metrics card (charts.go)
}

func (d *Dash) webApp(c *gin.Context) {
	ctx := c.Request.Context()
	a := appOf(c)
	det, err := d.appDetail(ctx, a)
	if err != nil {
		d.webFail(c, err)
		return
	}
	data := appData{AppDetail: det, Health: a.Health.WithDefaults(), Window: windowParam(c)}
	data.Charts = d.appCharts(ctx, a, data.Window)
	if data.Releases, err = d.store.releases(ctx, a.ID, 20); err == nil {
		if data.Events, err = d.store.events(ctx, a.ID, 30); err == nil {
			if data.Domains, err = d.store.domains(ctx, a); err == nil {
				if data.Builds, err = d.store.builds(ctx, a, 10); err == nil {
					data.Tasks, err = d.store.tasks(ctx, a, "", 10)
				}
			}
		}
	}
	if err != nil {
		d.webFail(c, err)
		return
	}
	for k := range a.Env {
		data.EnvKeys = append(data.EnvKeys, k)
	}
	sort.Strings(data.EnvKeys)
	if es, _, err := d.recentLogs(ctx, a.Name, 100, logFilter{Since: d.appSince(ctx, a.ID)}); err == nil {
		for _, e := range es {
			data.Logs = append(data.Logs, formatLogLine(e))
		}
	}
	d.render(c, http.StatusOK, "app", page{Title: a.Name, Data: data})
}
