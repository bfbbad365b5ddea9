package dash

import (
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
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

type appsData struct {
	Apps   []AppSummary
	Teams  []Team
	Sparks map[string]template.HTML // app → request rate sparkline
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

type appData struct {
	appOverview
	EnvKeys []string
	Health  common.HealthConfig
	Window  string        // of the charts: 1h, 6h or 24h
	Charts  template.HTML // the metrics card (charts.go)
}
