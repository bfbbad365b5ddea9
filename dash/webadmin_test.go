package dash

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestAdminPage: an admin disables, enables and deletes users, revokes
// another user's token and sets a team's limits from the Users page; a
// non-admin gets 403 there.
func TestAdminPage(t *testing.T) {
	e := newEnv(t, nil)
	bobToken := e.addUser("bob", "bobs")
	e.addUser("carl", "carls")
	b := newBrowser(t, e.url)
	csrf := b.login(e.admin.User, e.admin.Password)
	resp, page := b.get("/admin")
	for _, want := range []string{"bob", "carl", `action="/admin/users/bob/disable"`, `action="/admin/teams/bobs/limits"`, "<code>test</code>"} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, want) {
			t.Fatalf("users page lacks %q (%d):\n%s", want, resp.StatusCode, page)
		}
	}
	if strings.Contains(page, `action="/admin/users/`+e.admin.User+`/delete"`) {
		t.Fatal("the page offers to delete the admin themselves")
	}
	post := func(path string, form url.Values) {
		t.Helper()
		if form == nil {
			form = url.Values{}
		}
		form.Set("csrf", csrf)
		if resp, _ := b.post(path, form); resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "error=") {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// Revoke bob's token: the API no longer takes it.
	var tokID int64
	if err := e.pool.QueryRow(`SELECT t.id FROM tokens t JOIN users u ON u.id = t.user_id WHERE u.name = 'bob'`).Scan(&tokID); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.call("GET", "/api/v1/apps", bobToken, nil, nil); st != 200 {
		t.Fatalf("bob's token before: %d", st)
	}
	post("/admin/users/bob/tokens/"+strconv.FormatInt(tokID, 10)+"/revoke", nil)
	if st, _ := e.call("GET", "/api/v1/apps", bobToken, nil, nil); st != 401 {
		t.Fatalf("bob's revoked token: %d, want 401", st)
	}

	// Disable, then enable carl.
	post("/admin/users/carl/disable", nil)
	if _, page := b.get("/admin"); !strings.Contains(page, `action="/admin/users/carl/enable"`) {
		t.Fatal("carl not shown disabled")
	}
	if n := e.count(`SELECT COUNT(*) FROM users WHERE name = 'carl' AND disabled_at IS NOT NULL`); n != 1 {
		t.Fatal("carl not disabled")
	}
	post("/admin/users/carl/enable", nil)
	if n := e.count(`SELECT COUNT(*) FROM users WHERE name = 'carl' AND disabled_at IS NULL`); n != 1 {
		t.Fatal("carl not enabled again")
	}

	// Team limits.
	post("/admin/teams/bobs/limits", url.Values{"max_apps": {"3"}, "max_instances": {"7"}, "max_memory_mb": {""}, "max_domain_claims": {"2"}})
	var lim struct{ Limits TeamLimits }
	if st, _ := e.call("GET", "/api/v1/teams/bobs/limits", e.admin.Token, nil, &lim); st != 200 || lim.Limits.MaxApps != 3 ||
		lim.Limits.MaxInstances != 7 || lim.Limits.MaxDomainClaims != 2 {
		t.Fatalf("limits after the form: %d %+v", st, lim.Limits)
	}
	if resp, _ := b.post("/admin/teams/bobs/limits", url.Values{"csrf": {csrf}, "max_apps": {"-1"}}); !strings.Contains(resp.Header.Get("Location"), "error=") {
		t.Fatalf("negative limit accepted: %s", resp.Header.Get("Location"))
	}

	// Delete carl.
	post("/admin/users/carl/delete", nil)
	if n := e.count(`SELECT COUNT(*) FROM users WHERE name = 'carl'`); n != 0 {
		t.Fatal("carl not deleted")
	}

	// Not for users.
	hash, _ := bcrypt.GenerateFromPassword([]byte("plain-password-1"), bcrypt.MinCost)
	if _, err := e.pool.ExecContext(context.Background(), `UPDATE users SET password_hash = ?, disabled_at = NULL WHERE name = 'bob'`, string(hash)); err != nil {
		t.Fatal(err)
	}
	u := newBrowser(t, e.url)
	ucsrf := u.login("bob", "plain-password-1")
	if resp, _ := u.get("/admin"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("non-admin users page: %d", resp.StatusCode)
	}
	if resp, _ := u.post("/admin/users/admin/disable", url.Values{"csrf": {ucsrf}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("non-admin disable form: %d", resp.StatusCode)
	}
}
