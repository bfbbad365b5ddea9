package dash

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

func (d *Dash) webDeployPage(c *gin.Context) {
	d.render(c, http.StatusOK, "deploy", page{Title: "Deploy " + appOf(c).Name, Data: appData{AppDetail: AppDetail{App: d.appView(appOf(c))}}})
}

// webDeploy is the no-JS deploy: the multipart form posts here; the
// scripted page uses the API instead to show progress.
func (d *Dash) webDeploy(c *gin.Context) {
	a := appOf(c)
	rel, _, err := d.deployUpload(c, csrfToken(c.MustGet(sessionKey).(string)))
	if err != nil {
		d.back(c, "/apps/"+a.Name+"/deploy", "", err)
		return
	}
	d.back(c, "/apps/"+a.Name, fmt.Sprintf("deployed release v%d", rel.Version), nil)
}

func (d *Dash) webScale(c *gin.Context) {
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
		_, _, err = d.applyChange(c.Request.Context(), a, currentUser(c), ch, "scale")
	}
	d.back(c, "/apps/"+a.Name, "scaled", err)
}

func (d *Dash) webSetEnv(c *gin.Context) {
	a := appOf(c)
	set := map[string]string{strings.TrimSpace(c.PostForm("name")): c.PostForm("value")}
	err := validateEnv(set, nil)
	if err == nil {
		_, _, err = d.applyChange(c.Request.Context(), a, currentUser(c), appChange{Set: set}, "env")
	}
	d.back(c, "/apps/"+a.Name, "env updated", err)
}

func (d *Dash) webUnsetEnv(c *gin.Context) {
	a := appOf(c)
	unset := []string{c.PostForm("name")}
	err := validateEnv(nil, unset)
	if err == nil {
		_, _, err = d.applyChange(c.Request.Context(), a, currentUser(c), appChange{Unset: unset}, "env")
	}
	d.back(c, "/apps/"+a.Name, "env updated", err)
}

func (d *Dash) webRollback(c *gin.Context) {
	a := appOf(c)
	v, err := strconv.Atoi(c.PostForm("version"))
	var rel Release
	if err != nil || v < 0 {
		err = invalid("invalid_version", "version must be a positive number")
	} else {
		rel, err = d.doRollback(c.Request.Context(), a, currentUser(c), v)
	}
	d.back(c, "/apps/"+a.Name, fmt.Sprintf("rolled back: release v%d", rel.Version), err)
}

func (d *Dash) webHealth(c *gin.Context) {
	a := appOf(c)
	h := common.HealthConfig{Path: strings.TrimSpace(c.PostForm("path")), Body: c.PostForm("body")}
	var err error
	for _, f := range []struct {
		name string
		dst  *int
	}{{"status_min", &h.StatusMin}, {"status_max", &h.StatusMax}, {"interval_ms", &h.IntervalMS},
		{"timeout_ms", &h.TimeoutMS}, {"fall", &h.Fall}, {"rise", &h.Rise}, {"grace_ms", &h.GraceMS}} {
		var v *int
		if v, err = formInt(c, f.name); err != nil {
			break
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if h.Path == "" {
		// The form always shows the effective status range; it means
		// nothing for a TCP check.
		h.StatusMin, h.StatusMax = 0, 0
	}
	if err == nil {
		err = d.setHealth(c.Request.Context(), a, currentUser(c), h)
	}
	d.back(c, "/apps/"+a.Name, "health check saved", err)
}

func (d *Dash) webAddDomain(c *gin.Context) {
	a := appOf(c)
	_, err := d.bindDomain(c.Request.Context(), a, currentUser(c), strings.ToLower(strings.TrimSpace(c.PostForm("name"))))
	d.back(c, "/apps/"+a.Name, "domain added", err)
}

func (d *Dash) webVerifyDomain(c *gin.Context) {
	a := appOf(c)
	_, err := d.checkDomain(c.Request.Context(), a, c.Param("domain"))
	d.back(c, "/apps/"+a.Name, "domain verified", err)
}

func (d *Dash) webRemoveDomain(c *gin.Context) {
	a := appOf(c)
	err := d.store.removeDomain(c.Request.Context(), a.ID, c.Param("domain"), "domain "+c.Param("domain")+" removed by "+currentUser(c).Name)
	if err == nil {
		d.publishDesired(c.Request.Context(), a.Name)
	}
	d.back(c, "/apps/"+a.Name, "domain removed", err)
}

func (d *Dash) webDeleteApp(c *gin.Context) {
	a := appOf(c)
	if c.PostForm("confirm") != a.Name {
		d.back(c, "/apps/"+a.Name, "", invalid("confirm", "type the app's name to delete it"))
		return
	}
	if err := d.removeApp(c.Request.Context(), a, currentUser(c)); err != nil {
		d.back(c, "/apps/"+a.Name, "", err)
		return
	}
	d.back(c, "/apps", "deleted "+a.Name, nil)
}
