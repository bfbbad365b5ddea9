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
	t, err := h.s.runTask(c.Request.Context(), currentUser(c), a, api.RunTaskRequest{Command: strings.Fields(c.PostForm("command")),
		TimeLimit: strings.TrimSpace(c.PostForm("time_limit"))})
	h.back(c, "/apps/"+a.Name, fmt.Sprintf("task %s started", t.ID), err)
}

func (h *webHandlers) webDeployPage(c *gin.Context) {
	h.render(c, http.StatusOK, "deploy", page{Title: "Deploy " + appOf(c).Name, Data: appData{appOverview: appOverview{AppDetail: AppDetail{App: h.s.appView(appOf(c))}}}})
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
	instances, err := formInt(c, "instances")
	var memoryMB, cpuShares *int
	if err == nil {
		if memoryMB, err = formInt(c, "memory_mb"); err == nil {
			cpuShares, err = formInt(c, "cpu_shares")
		}
	}
	if err == nil {
		_, _, err = h.s.scale(c.Request.Context(), currentUser(c), a, instances, memoryMB, cpuShares)
	}
	h.back(c, "/apps/"+a.Name, "scaled", err)
}

func (h *webHandlers) webSetEnv(c *gin.Context) {
	a := appOf(c)
	set := map[string]string{strings.TrimSpace(c.PostForm("name")): c.PostForm("value")}
	_, _, err := h.s.setEnv(c.Request.Context(), currentUser(c), a, set, nil)
	h.back(c, "/apps/"+a.Name, "env updated", err)
}

func (h *webHandlers) webUnsetEnv(c *gin.Context) {
	a := appOf(c)
	unset := []string{c.PostForm("name")}
	_, _, err := h.s.setEnv(c.Request.Context(), currentUser(c), a, nil, unset)
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
	err := h.s.removeDomain(c.Request.Context(), currentUser(c), a, c.Param("domain"))
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
	apps, err := h.s.apps(ctx, u)
	if err != nil {
		h.webFail(c, err)
		return
	}
	teams, err := h.s.teams(ctx, u)
	if err != nil {
		h.webFail(c, err)
		return
	}
	data := appsData{Teams: teams}
	names := make([]string, 0, len(apps))
	for _, a := range apps {
		data.Apps = append(data.Apps, a)
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
	a, err := h.s.app(c.Request.Context(), currentUser(c), c.Param("app"))
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
	o, err := h.s.overview(ctx, a)
	if err != nil {
		h.webFail(c, err)
		return
	}
	data := appData{appOverview: o, Health: a.Health.WithDefaults(), Window: windowParam(c)}
	data.Charts = h.appCharts(ctx, a, data.Window)
	for k := range a.Env {
		data.EnvKeys = append(data.EnvKeys, k)
	}
	sort.Strings(data.EnvKeys)
	h.render(c, http.StatusOK, "app", page{Title: a.Name, Data: data})
}
