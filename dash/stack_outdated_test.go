package dash

import (
	"net/http"
	"strings"
	"testing"
)

// TestAppsMarkOutdatedStack: an app whose current release's build runs on
// an older version of its stack than the newest a builder recorded is
// marked in GET /api/v1/apps and on the dashboard's app list; once its
// build is on the newest version it is not.
func TestAppsMarkOutdatedStack(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("oldstack")
	e.createApp("nostack")
	var out struct {
		Release Release
	}
	if st, code := e.deploy(e.admin.Token, "oldstack", []byte("tarball"), &out); st != http.StatusCreated {
		t.Fatalf("deploy: %d %s", st, code)
	}
	// The builder owns builds and stack_versions: write what it would have.
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.pool.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`UPDATE releases SET stack = 'python' WHERE build_id = ?`, *out.Release.BuildID)
	exec(`INSERT INTO builds (id, app_id, status, stack, stack_version, image)
		SELECT ?, id, 'succeeded', 'python', '20260101.000000', 'img' FROM apps WHERE name = 'oldstack'`, *out.Release.BuildID)
	exec(`INSERT INTO stack_versions (stack, version) VALUES ('python', '20260101.000000'), ('python', '20260301.120000'),
		('node', '20270101.000000')`)

	list := func() map[string]AppSummary {
		t.Helper()
		var got struct{ Apps []AppSummary }
		if st, code := e.call("GET", "/api/v1/apps", e.admin.Token, nil, &got); st != http.StatusOK {
			t.Fatalf("list: %d %s", st, code)
		}
		m := map[string]AppSummary{}
		for _, a := range got.Apps {
			m[a.Name] = a
		}
		return m
	}
	apps := list()
	if a := apps["oldstack"]; !a.StackOutdated || a.Stack != "python" || a.StackVersion != "20260101.000000" || a.StackLatest != "20260301.120000" {
		t.Errorf("oldstack = %+v, want outdated python 20260101.000000 < 20260301.120000", a)
	}
	if a := apps["nostack"]; a.StackOutdated {
		t.Errorf("an app never deployed is marked outdated: %+v", a)
	}

	b := newBrowser(t, e.url)
	b.login(e.admin.User, e.admin.Password)
	_, page := b.get("/apps")
	if !strings.Contains(page, "python stack outdated") || !strings.Contains(page, "dinp rebuild oldstack") {
		t.Errorf("dashboard app list does not mark the outdated stack:\n%s", page)
	}

	exec(`UPDATE builds SET stack_version = '20260301.120000' WHERE id = ?`, *out.Release.BuildID)
	if a := list()["oldstack"]; a.StackOutdated {
		t.Errorf("app on the newest stack version is marked outdated: %+v", a)
	}
	if _, page = b.get("/apps"); strings.Contains(page, "stack outdated") {
		t.Errorf("dashboard marks an app on the newest stack version")
	}
}
