package dash

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// TestTeamsNeedConsent plays mallory, owner of a team created before her
// victim's: adding alice to her team only invites her (the same answer as
// for a name nobody has), alice's next app goes to alice's own team and
// mallory cannot read its env; alice joins only by accepting.
func TestTeamsNeedConsent(t *testing.T) {
	e := newEnv(t, nil)
	mallory := e.addUser("mallory", "mal")
	alice := e.addUser("alice", "alices")

	type answer struct {
		Team, User, Status string
	}
	var toAlice, toNobody answer
	stA, _ := e.call("POST", "/api/v1/teams/mal/members", mallory, MemberRequest{User: "alice", Role: "owner"}, &toAlice)
	stN, _ := e.call("POST", "/api/v1/teams/mal/members", mallory, MemberRequest{User: "nobody-here", Role: "owner"}, &toNobody)
	if stA != 202 || stN != stA || toAlice.Status != "invited" || toNobody.Status != toAlice.Status {
		t.Fatalf("existing user: %d %+v; unknown user: %d %+v (want the same 202 invited)", stA, toAlice, stN, toNobody)
	}
	if n := e.count(`SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id JOIN teams t ON t.id = m.team_id
		WHERE u.name = 'alice' AND t.name = 'mal'`); n != 0 {
		t.Fatal("alice enrolled without accepting")
	}

	// alice creates an app without naming a team: it is hers, not mallory's.
	var created struct{ App App }
	if st, code := e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "secrets", Env: map[string]string{"DB_PASSWORD": "hunter2"}}, &created); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	if created.App.Team != "alices" {
		t.Fatalf("app created in team %q, want alices", created.App.Team)
	}
	if st, _ := e.call("GET", "/api/v1/apps/secrets/env", mallory, nil, nil); st != 404 {
		t.Fatalf("mallory reads alice's env: %d", st)
	}

	// alice sees the invitation and may decline it; accepting joins.
	var invs struct{ Invitations []Invitation }
	if st, _ := e.call("GET", "/api/v1/invitations", alice, nil, &invs); st != 200 || len(invs.Invitations) != 1 ||
		invs.Invitations[0].Team != "mal" || invs.Invitations[0].InvitedBy != "mallory" {
		t.Fatalf("alice's invitations: %d %+v", st, invs)
	}
	if st, _ := e.call("POST", "/api/v1/invitations/mal/accept", mallory, nil, nil); st != 404 {
		t.Fatalf("accepting someone else's invitation: %d", st)
	}
	if st, _ := e.call("POST", "/api/v1/invitations/mal/decline", alice, nil, nil); st != 200 {
		t.Fatalf("decline: %d", st)
	}
	if st, _ := e.call("POST", "/api/v1/invitations/mal/accept", alice, nil, nil); st != 404 {
		t.Fatalf("accept after decline: %d", st)
	}
	e.call("POST", "/api/v1/teams/mal/members", mallory, MemberRequest{User: "alice"}, nil)
	if st, _ := e.call("POST", "/api/v1/invitations/mal/accept", alice, nil, nil); st != 200 {
		t.Fatalf("accept: %d", st)
	}
	if n := e.count(`SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id JOIN teams t ON t.id = m.team_id
		WHERE u.name = 'alice' AND t.name = 'mal' AND m.role = 'member'`); n != 1 {
		t.Fatal("alice not a member after accepting")
	}
	// Still: an app without a team goes to her own.
	if st, _ := e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "more"}, &created); st != 201 || created.App.Team != "alices" {
		t.Fatalf("second app: %d %+v", st, created.App)
	}
}

// TestLogsGoWithTheApp plays a tenant who takes the name of another team's
// deleted app: neither the old app's build log nor its output reach them.
func TestLogsGoWithTheApp(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("hello")
	e.addLog("hello", common.LogEntry{Source: "build", Build: 1, Line: "secret build step"})
	e.addLog("hello", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Line: "secret output"})
	if st, body := e.get("/api/v1/apps/hello/logs", e.admin.Token); st != 200 || !strings.Contains(body, "secret") {
		t.Fatalf("owner's logs: %d %q", st, body)
	}
	if st, code := e.call("DELETE", "/api/v1/apps/hello", e.admin.Token, nil, nil); st != 200 {
		t.Fatalf("delete: %d %s", st, code)
	}
	// A line the old app's dying container writes late (timestamped before
	// the new app existed) must not show either.
	late := time.Now()
	mallory := e.addUser("mallory", "mal")
	if st, code := e.call("POST", "/api/v1/apps", mallory, CreateAppRequest{Name: "hello"}, nil); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	e.addLog("hello", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Line: "secret late line", At: late.Add(-time.Second)})
	for _, q := range []string{"", "?source=build", "?format=json"} {
		if st, body := e.get("/api/v1/apps/hello/logs"+q, mallory); st != 200 || strings.Contains(body, "secret") {
			t.Fatalf("new app's logs%s: %d %q", q, st, body)
		}
	}
	e.addLog("hello", common.LogEntry{Source: "app", Instance: "0123456789abcdef", Line: "mine"})
	if st, body := e.get("/api/v1/apps/hello/logs", mallory); st != 200 || !strings.Contains(body, "mine") {
		t.Fatalf("new app's own line: %d %q", st, body)
	}
}

// TestAccountLifecycle: admins disable, enable and delete users and revoke
// any token; tokens expire; a password change revokes every other token.
func TestAccountLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.admin.Token
	if st, code := e.call("POST", "/api/v1/users", admin, CreateUserRequest{Name: "bob", Password: "bob-password-1"}, nil); st != 201 {
		t.Fatalf("create bob: %d %s", st, code)
	}
	bob1, _, _ := e.login("bob", "bob-password-1")
	bob2, _, _ := e.login("bob", "bob-password-1")
	ok := func(tok string) bool { st, _ := e.call("GET", "/api/v1/user", tok, nil, nil); return st == 200 }
	if !ok(bob1) || !ok(bob2) {
		t.Fatal("fresh tokens refused")
	}

	// Expiring tokens.
	if st, code := e.call("POST", "/api/v1/tokens", bob1, TokenRequest{Name: "ci", ExpiresIn: "0s"}, nil); st != 422 || code != "invalid_expires_in" {
		t.Fatalf("bad expires_in: %d %s", st, code)
	}
	var ci struct {
		Token     string
		ID        int64
		ExpiresAt time.Time `json:"expires_at"`
	}
	if st, _ := e.call("POST", "/api/v1/tokens", bob1, TokenRequest{Name: "ci", ExpiresIn: "30d"}, &ci); st != 201 ||
		ci.ExpiresAt.Before(time.Now().Add(29*24*time.Hour)) || !ok(ci.Token) {
		t.Fatalf("expiring token: %d %+v", st, ci)
	}
	e.pool.Exec(`UPDATE tokens SET expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = ?`, ci.ID)
	if ok(ci.Token) {
		t.Fatal("expired token accepted")
	}

	// An admin lists and revokes another user's token; bob cannot.
	var list struct{ Tokens []Token }
	if st, _ := e.call("GET", "/api/v1/users/bob/tokens", admin, nil, &list); st != 200 || len(list.Tokens) != 3 {
		t.Fatalf("admin lists bob's tokens: %d %+v", st, list)
	}
	if st, _ := e.call("GET", "/api/v1/users/admin/tokens", bob1, nil, nil); st != 403 {
		t.Fatalf("bob lists the admin's tokens: %d", st)
	}
	var bob2ID int64
	e.pool.QueryRow(`SELECT id FROM tokens WHERE hash = ?`, hashToken(bob2)).Scan(&bob2ID)
	if st, _ := e.call("DELETE", "/api/v1/users/bob/tokens/"+itoa(bob2ID), admin, nil, nil); st != 200 || ok(bob2) {
		t.Fatalf("admin revokes bob's token: %d, still valid %v", st, ok(bob2))
	}

	// A password change keeps only the token it was made with.
	bob3, _, _ := e.login("bob", "bob-password-1")
	if st, _ := e.call("PUT", "/api/v1/user/password", bob1, PasswordRequest{Current: "bob-password-1", New: "bob-password-2"}, nil); st != 200 {
		t.Fatalf("change password: %d", st)
	}
	if !ok(bob1) || ok(bob3) {
		t.Fatalf("after the password change: current token ok=%v, other token ok=%v", ok(bob1), ok(bob3))
	}

	// Disabled: no token, no login; enabled again: login works.
	if st, code := e.call("PATCH", "/api/v1/users/admin", admin, UserPatch{Disabled: ptr(true)}, nil); st != 409 || code != "self" {
		t.Fatalf("admin disables itself: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/apps", bob1, CreateAppRequest{Name: "bobs-app"}, nil); st != 201 {
		t.Fatalf("bob creates an app: %d", st)
	}
	if st, _ := e.call("PATCH", "/api/v1/users/bob", admin, UserPatch{Disabled: ptr(true)}, nil); st != 200 || ok(bob1) {
		t.Fatalf("disable: %d, token still valid %v", st, ok(bob1))
	}
	if _, st, _ := e.login("bob", "bob-password-2"); st != 401 {
		t.Fatalf("disabled user logs in: %d", st)
	}
	e.call("PATCH", "/api/v1/users/bob", admin, UserPatch{Disabled: ptr(false)}, nil)
	if _, st, _ := e.login("bob", "bob-password-2"); st != 201 {
		t.Fatalf("enabled user cannot log in: %d", st)
	}

	// Deleted: gone, the app stays with its team.
	if st, _ := e.call("DELETE", "/api/v1/users/bob", admin, nil, nil); st != 200 {
		t.Fatalf("delete: %d", st)
	}
	if n := e.count(`SELECT COUNT(*) FROM users WHERE name = 'bob'`); n != 0 {
		t.Fatal("bob still exists")
	}
	var app struct{ App App }
	if st, _ := e.call("GET", "/api/v1/apps/bobs-app", admin, nil, &app); st != 200 || app.App.Team != "bob" {
		t.Fatalf("bob's app after deleting bob: %d %+v", st, app.App)
	}
}

func ptr[T any](v T) *T { return &v }

// TestQuotas plays a tenant filling the platform: apps, instances and
// memory stop at the team's limits (403 quota_exceeded), env at 64 KB (413),
// unproven domain claims at the team's cap, which never blocks an admin;
// old releases (and their env snapshots) do not pile up.
func TestQuotas(t *testing.T) {
	e := newEnv(t, nil)
	mallory := e.addUser("mallory", "mal")
	var lim struct {
		Limits TeamLimits
		Usage  TeamUsage
	}
	if st, _ := e.call("PUT", "/api/v1/teams/mal/limits", mallory, TeamLimits{MaxApps: 100}, nil); st != 403 {
		t.Fatalf("tenant raises its own limits: %d", st)
	}
	if st, code := e.call("PUT", "/api/v1/teams/mal/limits", e.admin.Token,
		TeamLimits{MaxApps: 2, MaxInstances: 3, MaxMemoryMB: 512, MaxDomainClaims: 1}, &lim); st != 200 || lim.Limits.MaxApps != 2 {
		t.Fatalf("set limits: %d %s %+v", st, code, lim)
	}
	one, big := 1, 1024
	for _, name := range []string{"m1", "m2"} {
		if st, code := e.call("POST", "/api/v1/apps", mallory, CreateAppRequest{Name: name, Instances: &one, MemoryMB: ptr(128)}, nil); st != 201 {
			t.Fatalf("create %s: %d %s", name, st, code)
		}
	}
	refused := func(what string, st int, code string, wantSt int, wantCode string) {
		t.Helper()
		if st != wantSt || code != wantCode {
			t.Fatalf("%s: %d %s, want %d %s", what, st, code, wantSt, wantCode)
		}
	}
	st, code := e.call("POST", "/api/v1/apps", mallory, CreateAppRequest{Name: "m3", Instances: &one}, nil)
	refused("third app", st, code, 403, "quota_exceeded")
	st, code = e.call("POST", "/api/v1/apps/m1/scale", mallory, ScaleRequest{Instances: ptr(3)}, nil)
	refused("4 instances in all", st, code, 403, "quota_exceeded")
	st, code = e.call("POST", "/api/v1/apps/m1/scale", mallory, ScaleRequest{MemoryMB: &big}, nil)
	refused("1152 MB in all", st, code, 403, "quota_exceeded")
	if st, code := e.call("POST", "/api/v1/apps/m1/scale", mallory, ScaleRequest{Instances: ptr(2)}, nil); st != 200 {
		t.Fatalf("scale within limits: %d %s", st, code)
	}
	e.call("GET", "/api/v1/teams/mal/limits", mallory, nil, &lim)
	if lim.Usage.Apps != 2 || lim.Usage.Instances != 3 || lim.Usage.MemoryMB != 384 {
		t.Fatalf("usage %+v", lim.Usage)
	}

	// env: 64 KB per app, whatever the number of requests.
	v30 := strings.Repeat("x", 30<<10)
	if st, code := e.call("PUT", "/api/v1/apps/m1/env", mallory, EnvRequest{Set: map[string]string{"A": v30}}, nil); st != 200 {
		t.Fatalf("30 KB env: %d %s", st, code)
	}
	e.call("PUT", "/api/v1/apps/m1/env", mallory, EnvRequest{Set: map[string]string{"B": v30}}, nil)
	st, code = e.call("PUT", "/api/v1/apps/m1/env", mallory, EnvRequest{Set: map[string]string{"C": v30}}, nil)
	refused("90 KB env", st, code, 413, "env_too_large")
	if n := e.count(`SELECT COALESCE(MAX(LENGTH(env_json)), 0) FROM apps`); n > MaxEnvBytes+100 {
		t.Fatalf("stored env of %d bytes", n)
	}

	// Domain claims: one unproven claim per team here; an admin still binds.
	if st, code := e.call("POST", "/api/v1/apps/m1/domains", mallory, DomainRequest{Name: "shop.example.com"}, nil); st != 201 {
		t.Fatalf("claim: %d %s", st, code)
	}
	st, code = e.call("POST", "/api/v1/apps/m2/domains", mallory, DomainRequest{Name: "bank.example.com"}, nil)
	refused("second claim", st, code, 403, "quota_exceeded")
	e.createApp("shop")
	if st, code := e.call("POST", "/api/v1/apps/shop/domains", e.admin.Token, DomainRequest{Name: "shop.example.com"}, nil); st != 201 {
		t.Fatalf("admin blocked by an unproven claim: %d %s", st, code)
	}

	// Releases: at most maxReleasesKept (+ current and running) stay.
	var appID int64
	e.pool.QueryRow(`SELECT id FROM apps WHERE name = 'm2'`).Scan(&appID)
	for i := 0; i < maxReleasesKept+15; i++ {
		if _, err := (&store{db: e.pool}).deployRelease(context.Background(), appID, releaseSpec{Image: "reg/m2@sha256:" + strings.Repeat("a", 64),
			CreatedBy: "mallory", EventKind: "deploy"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.count(`SELECT COUNT(*) FROM releases WHERE app_id = ?`, appID); n > maxReleasesKept+1 {
		t.Fatalf("%d releases kept", n)
	}
}

// TestLoginHardening: a stranger guessing a user's password from their own
// address slows down themselves, not the user; weak passwords are refused;
// the post-login redirect stays on the site.
func TestLoginHardening(t *testing.T) {
	e := newEnv(t, nil)
	for _, p := range []string{"12345678", "1234567890", "aaaaaaaaaaaa", "Password123"} {
		if st, code := e.call("POST", "/api/v1/users", e.admin.Token, CreateUserRequest{Name: "weak", Password: p}, nil); st != 422 || code != "invalid_password" {
			t.Fatalf("password %q: %d %s", p, st, code)
		}
	}
	if st, code := e.call("POST", "/api/v1/users", e.admin.Token, CreateUserRequest{Name: "alice", Password: "correct horse battery"}, nil); st != 201 {
		t.Fatalf("create alice: %d %s", st, code)
	}
	for i := 0; i < 6; i++ {
		e.login("alice", "guess-number-"+itoa(int64(i)))
	}
	if _, st, code := e.login("alice", "correct horse battery"); st != 429 {
		t.Fatalf("the guesser's address after 6 failures: %d %s, want 429", st, code)
	}
	// alice, from another address, is not locked out.
	from2 := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	raw, _ := json.Marshal(LoginRequest{User: "alice", Password: "correct horse battery"})
	resp, err := from2.Post(e.url+"/api/v1/login", "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("alice from 127.0.0.2: %d, want 201", resp.StatusCode)
	}

	for next, want := range map[string]string{
		"/apps/hello":           "/apps/hello",
		"/apps?x=1":             "/apps?x=1",
		"/\t/evil.example":      "/apps",
		"/%09/evil.example":     "/apps",
		"//evil.example":        "/apps",
		"/\\evil.example":       "/apps",
		"https://evil.example/": "/apps",
		" /evil":                "/apps",
		"/ /evil":               "/apps",
		"/\r\n/evil":            "/apps",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}
