package dash

import (
	"testing"
)

// TestRootOptIn: only an admin lets an app run as its image's user; the
// choice is snapshot in a new release (so it rolls out, and revoking
// reaches running instances), and the team's owner cannot grant it.
func TestRootOptIn(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.addUser("olga", "olgas")
	var created struct{ App App }
	if st, code := e.call("POST", "/api/v1/apps", owner, CreateAppRequest{Name: "rooty"}, &created); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	if created.App.AllowRoot {
		t.Fatal("a new app allows root")
	}
	if st, _ := e.deploy(owner, "rooty", []byte("tarball"), nil); st != 201 {
		t.Fatalf("deploy: %d", st)
	}
	if st, code := e.call("PUT", "/api/v1/apps/rooty/root", owner, RootRequest{AllowRoot: ptr(true)}, nil); st != 403 {
		t.Fatalf("the app's owner allowing root: %d %s, want 403", st, code)
	}
	if st, code := e.call("PUT", "/api/v1/apps/rooty/root", e.admin.Token, RootRequest{}, nil); st != 400 && st != 422 {
		t.Fatalf("no allow_root: %d %s, want a validation error", st, code)
	}
	var out struct {
		App     App
		Release *Release
	}
	if st, code := e.call("PUT", "/api/v1/apps/rooty/root", e.admin.Token, RootRequest{AllowRoot: ptr(true)}, &out); st != 200 {
		t.Fatalf("admin allowing root: %d %s", st, code)
	}
	if !out.App.AllowRoot || out.Release == nil || out.Release.Version != 2 {
		t.Fatalf("after allowing: app %+v release %+v, want allow_root and release 2", out.App, out.Release)
	}
	if n := e.count(`SELECT COUNT(*) FROM releases r JOIN apps a ON a.id = r.app_id
		WHERE a.name = 'rooty' AND r.version = 2 AND r.allow_root = 1`); n != 1 {
		t.Fatal("release 2 does not carry allow_root")
	}
	var shown struct{ App App }
	if st, _ := e.call("GET", "/api/v1/apps/rooty", owner, nil, &shown); st != 200 || !shown.App.AllowRoot {
		t.Fatalf("owner's view: %d %+v", st, shown.App)
	}
	if st, _ := e.call("PUT", "/api/v1/apps/rooty/root", e.admin.Token, RootRequest{AllowRoot: ptr(false)}, &out); st != 200 ||
		out.App.AllowRoot || out.Release == nil || out.Release.Version != 3 {
		t.Fatalf("revoking: %d %+v %+v", st, out.App, out.Release)
	}
}
