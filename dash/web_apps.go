package dash

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
	"github.com/gin-gonic/gin"
)

// webRunTask is the app page's "Run a command" form: the line is split on
// spaces into arguments (wrap it in sh -c '…' for a shell), run as a task
// of the current release; its output is at /api/v1/tasks/{id}/log.
func (h *webHandlers) webRunTask(c *gin.Context) {
	a := appOf(c)
	t, err := h.s.newRunTask(c, a, api.RunTaskRequest{Command: strings.Fields(c.PostForm("command")),
		TimeLimit: strings.TrimSpace(c.PostForm("time_limit"))})
	h.back(c, "/apps/"+a.Name, fmt.Sprintf("task %s started", t.ID), err)
}

func (h *webHandlers) webDeployPage(c *gin.Context) {
	h.render(c, http.StatusOK, "deploy", page{Title: "Deploy " + appOf(c).Name, Data: appData{AppDetail: AppDetail{App: h.s.appView(appOf(c))}}})
}

// webDeploy is the no-JS deploy: the multipart form posts here; the
// scripted page uses the API instead to show progress.
func (h *webHandlers) webDeploy(c *gin.Context) {
	a := appOf(c)
	rel, _, err := deployRequest(c, h.s, csrfToken(c.MustGet(sessionKey).(string)))
	if err != nil {
		h.back(c, "/apps/"+a.Name+"/deploy", "", err)
		return
	}
	h.back(c, "/apps/"+a.Name, fmt.Sprintf("deployed release v%d", rel.Version), nil)
}

func (h *webHandlers) webScale(c *gin.Context) {
	a := appOf(c)
	var ch appChange
	var err error
	if ch.Instances, err = formInt(c, "instances"); err == nil {
		if ch.MemoryMB, err = formInt(c, "memory_mb"); err == nil {
			ch.CPUShares, err = formInt(c, "cpu_shares")
		}
	}
	if err == nil {
		err = validateLimits(ch.Instances, ch.MemoryMB, ch.CPUShares)
	}
	if err == nil {
		_, _, err = h.s.applyChange(c.Request.Context(), a, currentUser(c), ch, "scale")
	}
	h.back(c, "/apps/"+a.Name, "scaled", err)
}

func (h *webHandlers) webSetEnv(c *gin.Context) {
	a := appOf(c)
	set := map[string]string{strings.TrimSpace(c.PostForm("name")): c.PostForm("value")}
	err := validateEnv(set, nil)
	if err == nil {
		_, _, err = h.s.applyChange(c.Request.Context(), a, currentUser(c), appChange{Set: set}, "env")
	}
	h.back(c, "/apps/"+a.Name, "env updated", err)
}

func (h *webHandlers) webUnsetEnv(c *gin.Context) {
	a := appOf(c)
	unset := []string{c.PostForm("name")}
	err := validateEnv(nil, unset)
	if err == nil {
		_, _, err = h.s.applyChange(c.Request.Context(), a, currentUser(c), appChange{Unset: unset}, "env")
	}
	h.back(c, "/apps/"+a.Name, "env updated", err)
}

func (h *webHandlers) webRollback(c *gin.Context) {
	a := appOf(c)
	v, err := strconv.Atoi(c.PostForm("version"))
	var rel Release
	if err != nil || v < 0 {
		err = invalid("invalid_version", "version must be a positive number")
	} else {
		rel, err = h.s.doRollback(c.Request.Context(), a, currentUser(c), v)
	}
	h.back(c, "/apps/"+a.Name, fmt.Sprintf("rolled back: release v%d", rel.Version), err)
}

func (h *webHandlers) webHealth(c *gin.Context) {
	a := appOf(c)
	hc := common.HealthConfig{Path: strings.TrimSpace(c.PostForm("path")), Body: c.PostForm("body")}
	var err error
	for _, f := range []struct {
		name string
		dst  *int
	}{{"status_min", &hc.StatusMin}, {"status_max", &hc.StatusMax}, {"interval_ms", &hc.IntervalMS},
		{"timeout_ms", &hc.TimeoutMS}, {"fall", &hc.Fall}, {"rise", &hc.Rise}, {"grace_ms", &hc.GraceMS}} {
		var v *int
		if v, err = formInt(c, f.name); err != nil {
			break
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if hc.Path == "" {
		// The form always shows the effective status range; it means
		// nothing for a TCP check.
		hc.StatusMin, hc.StatusMax = 0, 0
	}
	if err == nil {
		err = h.s.setHealth(c.Request.Context(), a, currentUser(c), hc)
	}
	h.back(c, "/apps/"+a.Name, "health check saved", err)
}

func (h *webHandlers) webAddDomain(c *gin.Context) {
	a := appOf(c)
	_, err := h.s.bindDomain(c.Request.Context(), a, currentUser(c), strings.ToLower(strings.TrimSpace(c.PostForm("name"))))
	h.back(c, "/apps/"+a.Name, "domain added", err)
}

func (h *webHandlers) webVerifyDomain(c *gin.Context) {
	a := appOf(c)
	_, err := h.s.checkDomain(c.Request.Context(), a, c.Param("domain"))
	h.back(c, "/apps/"+a.Name, "domain verified", err)
}

func (h *webHandlers) webRemoveDomain(c *gin.Context) {
	a := appOf(c)
	err := h.s.store.removeDomain(c.Request.Context(), a.ID, c.Param("domain"), "domain "+c.Param("domain")+" removed by "+currentUser(c).Name)
	if err == nil {
		h.s.publishDesired(c.Request.Context(), a.Name)
	}
	h.back(c, "/apps/"+a.Name, "domain removed", err)
}

func (h *webHandlers) webDeleteApp(c *gin.Context) {
	a := appOf(c)
	if c.PostForm("confirm") != a.Name {
		h.back(c, "/apps/"+a.Name, "", invalid("confirm", "type the app's name to delete it"))
		return
	}
	if err := h.s.removeApp(c.Request.Context(), a, currentUser(c)); err != nil {
		h.back(c, "/apps/"+a.Name, "", err)
		return
	}
	h.back(c, "/apps", "deleted "+a.Name, nil)
}

func (h *webHandlers) webApps(c *gin.Context) {
	ctx, u := c.Request.Context(), currentUser(c)
	rows, err := h.s.store.apps(ctx, u)
	if err != nil {
		h.webFail(c, err)
		return
	}
	teams, err := h.s.store.teams(ctx, u)
	if err != nil {
		h.webFail(c, err)
		return
	}
	data := appsData{Teams: teams}
	names := make([]string, 0, len(rows))
	for _, a := range rows {
		data.Apps = append(data.Apps, summarize(h.s.appView(a), a))
		names = append(names, a.Name)
	}
	data.Sparks = h.appSparklines(ctx, names)
	h.render(c, http.StatusOK, "apps", page{Title: "Apps", Data: data})
}

func (h *webHandlers) webCreateApp(c *gin.Context) {
	req := CreateAppRequest{Name: strings.TrimSpace(c.PostForm("name")), Team: c.PostForm("team"), HealthPath: strings.TrimSpace(c.PostForm("health_path"))}
	var err error
	if req.Instances, err = formInt(c, "instances"); err == nil {
		req.MemoryMB, err = formInt(c, "memory_mb")
	}
	if err == nil {
		_, err = h.s.newApp(c.Request.Context(), currentUser(c), req)
	}
	if err != nil {
		h.back(c, "/apps", "", err)
		return
	}
	h.back(c, "/apps/"+req.Name, "created "+req.Name+"; deploy it next", nil)
}

func (h *webHandlers) webLoadApp(c *gin.Context) {
	a, err := h.s.store.app(c.Request.Context(), currentUser(c), c.Param("app"))
	if err != nil {
		h.webFail(c, err)
		return
	}
	c.Set(appKey, a)
	c.Next()
}

func (h *webHandlers) webApp(c *gin.Context) {
	ctx := c.Request.Context()
	a := appOf(c)
	det, err := h.s.appDetail(ctx, a)
	if err != nil {
		h.webFail(c, err)
		return
	}
	data := appData{AppDetail: det, Health: a.Health.WithDefaults(), Window: windowParam(c)}
	data.Charts = h.appCharts(ctx, a, data.Window)
	if data.Releases, err = h.s.store.releases(ctx, a.ID, 20); err == nil {
		if data.Events, err = h.s.store.events(ctx, a.ID, 30); err == nil {
			if data.Domains, err = h.s.store.domains(ctx, a); err == nil {
				if data.Builds, err = h.s.store.builds(ctx, a, 10); err == nil {
					data.Tasks, err = h.s.store.tasks(ctx, a, "", 10)
				}
			}
		}
	}
	if err != nil {
		h.webFail(c, err)
		return
	}
	for k := range a.Env {
		data.EnvKeys = append(data.EnvKeys, k)
	}
	sort.Strings(data.EnvKeys)
	if es, _, err := h.s.recentLogs(ctx, a.Name, 100, logFilter{Since: h.s.appSince(ctx, a.ID)}); err == nil {
		for _, e := range es {
			data.Logs = append(data.Logs, formatLogLine(e))
		}
	}
	h.render(c, http.StatusOK, "app", page{Title: a.Name, Data: data})
}
