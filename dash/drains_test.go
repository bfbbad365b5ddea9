package dash

import (
	"fmt"
	"testing"

	"github.com/dinp/dinp/dash/api"
)

// Drains: the app's team adds, lists and removes them; bad URLs and
// internal destinations are refused with 422, another team sees 404, and
// the per-app cap holds.
func TestDrainsAPI(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.admin.Token
	e.createApp("web")
	for _, bad := range []struct{ url, code string }{
		{"http://logs.example.com/", "invalid_drain"},
		{"syslog://logs.example.com", "invalid_drain"},
		{"syslog://127.0.0.1:6379", "internal_drain"}, // Redis
		{"syslog+tls://10.0.0.5:6514", "internal_drain"},
		{"https://[::1]/x", "internal_drain"},
		{"https://169.254.169.254/latest", "internal_drain"},
	} {
		if st, code := e.call("POST", "/api/v1/apps/web/drains", admin, api.DrainRequest{URL: bad.url}, nil); st != 422 || code != bad.code {
			t.Errorf("%s: %d %s, want 422 %s", bad.url, st, code, bad.code)
		}
	}
	if n := e.count(`SELECT COUNT(*) FROM drains`); n != 0 {
		t.Fatalf("%d drains after refusals", n)
	}
	var out struct{ Drain api.Drain }
	if st, code := e.call("POST", "/api/v1/apps/web/drains", admin, api.DrainRequest{URL: "syslog+tls://203.0.113.7:6514"}, &out); st != 201 || out.Drain.ID == 0 {
		t.Fatalf("add: %d %s %+v", st, code, out)
	}
	if st, code := e.call("POST", "/api/v1/apps/web/drains", admin, api.DrainRequest{URL: "syslog+tls://203.0.113.7:6514"}, nil); st != 409 || code != "drain_exists" {
		t.Fatalf("duplicate: %d %s", st, code)
	}
	var list struct{ Drains []api.Drain }
	if st, _ := e.call("GET", "/api/v1/apps/web/drains", admin, nil, &list); st != 200 || len(list.Drains) != 1 || list.Drains[0].URL != "syslog+tls://203.0.113.7:6514" || list.Drains[0].CreatedBy != "admin" {
		t.Fatalf("list: %d %+v", st, list)
	}
	// Another team neither sees nor removes it.
	bob := e.addUser("bob", "bobs")
	if st, _ := e.call("GET", "/api/v1/apps/web/drains", bob, nil, nil); st != 404 {
		t.Fatalf("bob lists: %d", st)
	}
	if st, _ := e.call("DELETE", fmt.Sprintf("/api/v1/apps/web/drains/%d", out.Drain.ID), bob, nil, nil); st != 404 {
		t.Fatalf("bob removes: %d", st)
	}
	for i := 1; i < maxDrainsPerApp; i++ {
		if st, code := e.call("POST", "/api/v1/apps/web/drains", admin, api.DrainRequest{URL: fmt.Sprintf("https://203.0.113.7/%d", i)}, nil); st != 201 {
			t.Fatalf("drain %d: %d %s", i, st, code)
		}
	}
	if st, code := e.call("POST", "/api/v1/apps/web/drains", admin, api.DrainRequest{URL: "https://203.0.113.7/over"}, nil); st != 403 || code != "quota_exceeded" {
		t.Fatalf("over the cap: %d %s", st, code)
	}
	if st, _ := e.call("DELETE", fmt.Sprintf("/api/v1/apps/web/drains/%d", out.Drain.ID), admin, nil, nil); st != 200 {
		t.Fatalf("remove: %d", st)
	}
	if st, _ := e.call("DELETE", fmt.Sprintf("/api/v1/apps/web/drains/%d", out.Drain.ID), admin, nil, nil); st != 404 {
		t.Fatalf("remove again: %d", st)
	}
	if n := e.count(`SELECT COUNT(*) FROM events WHERE kind = 'drain'`); n != maxDrainsPerApp+1 {
		t.Fatalf("%d drain events, want %d", n, maxDrainsPerApp+1)
	}
	// The drains go with the app.
	if st, _ := e.call("DELETE", "/api/v1/apps/web", admin, nil, nil); st != 200 {
		t.Fatalf("delete app: %d", st)
	}
	if n := e.count(`SELECT COUNT(*) FROM drains`); n != 0 {
		t.Fatalf("%d drains left after the app", n)
	}
}
