package dash

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
)

// rebuild re-releases the app's current build on the newest version of its
// stack (no upload: the builder reuses the app layer) and rolls it out like
// any deploy.
func (d *Dash) rebuild(c *gin.Context) {
	a, u := appOf(c), currentUser(c)
	if a.CurrentRelease == nil {
		d.fail(c, common.Errf(http.StatusConflict, "no_release", "the app has no release to rebuild; deploy first"))
		return
	}
	cur, err := d.store.release(c.Request.Context(), a.ID, *a.CurrentRelease)
	if err != nil {
		d.fail(c, err)
		return
	}
	if cur.BuildID == nil {
		d.fail(c, common.Errf(http.StatusConflict, "no_build", "the current release was deployed from an image, not built here: deploy again"))
		return
	}
	build, err := d.builder.rebuild(c.Request, a.Name, u.Name, *cur.BuildID)
	if err != nil {
		d.fail(c, err)
		return
	}
	id := build.ID
	rel, err := d.store.deployRelease(c.Request.Context(), a.ID, releaseSpec{
		Image: build.Image, Stack: build.Stack, BuildID: &id, CreatedBy: u.Name, EventKind: "deploy",
		Description: fmt.Sprintf("rebuild of build %d on the newest %s stack (build %d)", *cur.BuildID, build.Stack, build.ID),
	})
	if err != nil {
		d.fail(c, err)
		return
	}
	d.publishDesired(c.Request.Context(), a.Name)
	d.log.Info("rebuilt", "app", a.Name, "release", rel.Version, "build", build.ID, "user", u.Name)
	c.JSON(http.StatusCreated, gin.H{"release": rel, "build": build})
}

// rebuild asks the builder to put build from's app on the newest version
// of its stack.
func (b *builderClient) rebuild(r *http.Request, app, by string, from int64) (common.Build, error) {
	u := b.base + "/v1/rebuilds?" + url.Values{"app": {app}, "created_by": {by}, "build": {strconv.FormatInt(from, 10)}}.Encode()
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, u, nil)
	if err != nil {
		return common.Build{}, fmt.Errorf("builder request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil {
		return common.Build{}, errBuilderUnavailable
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return common.Build{}, errBuilderUnavailable
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb common.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return common.Build{}, common.Errf(resp.StatusCode, eb.Error.Code, eb.Error.Message)
		}
		return common.Build{}, common.Errf(resp.StatusCode, "build_failed", "builder answered "+resp.Status)
	}
	var out common.Build
	if err := json.Unmarshal(raw, &out); err != nil || out.Image == "" {
		return common.Build{}, errBuilderUnavailable
	}
	return out, nil
}
