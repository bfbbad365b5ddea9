package dash

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
)

// serveRebuild answers POST /v1/rebuilds like the builder: a new build of
// the same app whose image differs from the source build's.
func (fb *fakeBuilder) serveRebuild(w http.ResponseWriter, r *http.Request) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	fb.by = r.URL.Query().Get("created_by")
	fb.got = []byte("rebuild of " + r.URL.Query().Get("build"))
	fb.nextID++
	app := r.URL.Query().Get("app")
	digest := fmt.Sprintf("sha256:%064d", fb.nextID)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(common.Build{ID: fb.nextID, App: app, Status: "succeeded", Stack: "debian",
		Image: "127.0.0.1:5000/" + app + "@" + digest, Digest: digest})
}

func TestRebuildReleasesCurrentBuild(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("hello")
	var out struct {
		Release Release
		Build   common.Build
	}
	if st, code := e.call("POST", "/api/v1/apps/hello/rebuild", e.admin.Token, nil, &out); st != http.StatusConflict || code != "no_release" {
		t.Fatalf("rebuild before any deploy: %d %s", st, code)
	}
	if st, code := e.deploy(e.admin.Token, "hello", []byte("tarball"), &out); st != 201 {
		t.Fatalf("deploy: %d %s", st, code)
	}
	first := out.Build.ID
	if st, code := e.call("POST", "/api/v1/apps/hello/rebuild", e.admin.Token, nil, &out); st != http.StatusCreated {
		t.Fatalf("rebuild: %d %s", st, code)
	}
	if string(e.builder.got) != fmt.Sprintf("rebuild of %d", first) || e.builder.by != "admin" {
		t.Errorf("builder asked %q by %q", e.builder.got, e.builder.by)
	}
	if out.Release.Version != 2 || out.Release.BuildID == nil || *out.Release.BuildID != out.Build.ID ||
		out.Release.Image != out.Build.Image || !strings.Contains(out.Release.Description, "rebuild") {
		t.Fatalf("rebuild release = %+v, build %+v", out.Release, out.Build)
	}
}
