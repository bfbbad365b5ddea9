package dash

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
)

// login posts a password and returns the token (or "" and the error code).
func (e *env) login(user, password string) (string, int, string) {
	e.t.Helper()
	var out struct{ Token string }
	st, code := e.call("POST", "/api/v1/login", "", LoginRequest{User: user, Password: password}, &out)
	return out.Token, st, code
}

func TestLoginTokensAndRevocation(t *testing.T) {
	e := newEnv(t, nil)
	tok, st, code := e.login(e.admin.User, e.admin.Password)
	if st != http.StatusCreated || !strings.HasPrefix(tok, TokenPrefix) {
		t.Fatalf("login: %d %s %q", st, code, tok)
	}
	var who struct{ User User }
	if st, _ := e.call("GET", "/api/v1/user", tok, nil, &who); st != 200 || who.User.Name != e.admin.User || !who.User.IsAdmin {
		t.Fatalf("whoami with the login token: %d %+v", st, who)
	}
	if _, st, code := e.login(e.admin.User, "wrong password"); st != 401 || code != "bad_login" {
		t.Fatalf("wrong password: %d %s", st, code)
	}
	if _, st, code := e.login("nobody", "whatever-password"); st != 401 || code != "bad_login" {
		t.Fatalf("unknown user: %d %s", st, code)
	}

	var created struct {
		Token string
		ID    int64
	}
	if st, code := e.call("POST", "/api/v1/tokens", tok, TokenRequest{Name: "ci"}, &created); st != 201 || created.Token == "" {
		t.Fatalf("create token: %d %s", st, code)
	}
	var list struct{ Tokens []Token }
	e.call("GET", "/api/v1/tokens", created.Token, nil, &list)
	found := false
	for _, tk := range list.Tokens {
		found = found || (tk.ID == created.ID && tk.Name == "ci" && tk.RevokedAt == nil)
	}
	if !found {
		t.Fatalf("token list %+v lacks the new token", list.Tokens)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), created.Token) || strings.Contains(string(raw), hashToken(created.Token)) {
		t.Fatal("token list shows a secret or its hash")
	}
	if st, _ := e.call("DELETE", "/api/v1/tokens/"+itoa(created.ID), tok, nil, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	// Revoked means refused on the very next request.
	if st, code := e.call("GET", "/api/v1/apps", created.Token, nil, nil); st != 401 || code != "unauthorized" {
		t.Fatalf("revoked token: %d %s", st, code)
	}
	if st, _ := e.call("DELETE", "/api/v1/tokens/"+itoa(created.ID), tok, nil, nil); st != 404 {
		t.Fatalf("revoking twice: %d", st)
	}

	// Logout revokes the token it is called with.
	if st, _ := e.call("POST", "/api/v1/logout", tok, nil, nil); st != 200 {
		t.Fatalf("logout: %d", st)
	}
	if st, _ := e.call("GET", "/api/v1/user", tok, nil, nil); st != 401 {
		t.Fatalf("token after logout: %d", st)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestLoginRateLimited(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 5 {
		if _, st, _ := e.login(e.admin.User, "wrong password"); st != 401 {
			t.Fatalf("attempt %d: %d", i, st)
		}
	}
	req, _ := http.NewRequest("POST", e.url+"/api/v1/login", strings.NewReader(`{"user":"`+e.admin.User+`","password":"`+e.admin.Password+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 5 failures the right password got %d (Retry-After %q), want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestLoginLimiterWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLoginLimiter(2, time.Minute)
	l.now = func() time.Time { return now }
	l.fail("u")
	l.fail("u")
	if l.retryAfter("u") == 0 {
		t.Fatal("2 failures with max 2: want a wait")
	}
	if l.retryAfter("v") != 0 {
		t.Fatal("other keys are not limited")
	}
	now = now.Add(61 * time.Second)
	if w := l.retryAfter("u"); w != 0 {
		t.Fatalf("after the window: wait %s", w)
	}
	l.fail("u")
	l.reset("u")
	if l.retryAfter("u") != 0 {
		t.Fatal("reset keeps failures")
	}
}

func TestUsersTeamsMembers(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.admin.Token
	if st, code := e.call("POST", "/api/v1/users", admin, CreateUserRequest{Name: "bob", Password: "short"}, nil); st != 422 || code != "invalid_password" {
		t.Fatalf("short password: %d %s", st, code)
	}
	if st, code := e.call("POST", "/api/v1/users", admin, CreateUserRequest{Name: "bob", Password: "bob-password", Team: "bobs"}, nil); st != 201 {
		t.Fatalf("create bob: %d %s", st, code)
	}
	if st, code := e.call("POST", "/api/v1/users", admin, CreateUserRequest{Name: "bob", Password: "bob-password"}, nil); st != 409 {
		t.Fatalf("duplicate user: %d %s", st, code)
	}
	e.call("POST", "/api/v1/users", admin, CreateUserRequest{Name: "carol", Password: "carol-password"}, nil)
	bob, st, _ := e.login("bob", "bob-password")
	if st != 201 {
		t.Fatalf("bob login: %d", st)
	}
	if st, code := e.call("GET", "/api/v1/users", bob, nil, nil); st != 403 || code != "forbidden" {
		t.Fatalf("bob lists users: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/users", bob, CreateUserRequest{Name: "eve", Password: "eve-password"}, nil); st != 403 {
		t.Fatalf("bob creates a user: %d", st)
	}
	// bob is a plain member of bobs: he cannot manage it until made owner.
	if st, code := e.call("POST", "/api/v1/teams/bobs/members", bob, MemberRequest{User: "carol"}, nil); st != 403 {
		t.Fatalf("member adds member: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/teams/bobs/members", admin, MemberRequest{User: "bob", Role: "owner"}, nil); st != 200 {
		t.Fatalf("admin makes bob owner: %d", st)
	}
	if st, code := e.call("POST", "/api/v1/teams/bobs/members", bob, MemberRequest{User: "carol"}, nil); st != 202 {
		t.Fatalf("owner invites carol: %d %s", st, code)
	}
	carol, _, _ := e.login("carol", "carol-password")
	if st, code := e.call("POST", "/api/v1/invitations/bobs/accept", carol, nil, nil); st != 200 {
		t.Fatalf("carol accepts: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/teams/main/members", bob, MemberRequest{User: "bob"}, nil); st != 404 {
		t.Fatalf("bob joins a foreign team: %d", st)
	}
	if st, code := e.call("DELETE", "/api/v1/teams/bobs/members/bob", bob, nil, nil); st != 409 || code != "last_owner" {
		t.Fatalf("remove last owner: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/teams", bob, TeamRequest{Name: "bobs-too"}, nil); st != 201 {
		t.Fatalf("create team: %d", st)
	}
	var teams struct{ Teams []Team }
	e.call("GET", "/api/v1/teams", bob, nil, &teams)
	names := []string{}
	for _, tm := range teams.Teams {
		names = append(names, tm.Name)
	}
	if strings.Join(names, ",") != "bobs,bobs-too" {
		t.Fatalf("bob's teams %v", names)
	}
	if st, _ := e.call("DELETE", "/api/v1/teams/bobs/members/carol", bob, nil, nil); st != 200 {
		t.Fatalf("remove carol: %d", st)
	}
	// carol's app, naming no team, goes to her personal team.
	var created struct{ App App }
	if st, code := e.call("POST", "/api/v1/apps", carol, CreateAppRequest{Name: "x"}, &created); st != 201 || created.App.Team != "carol" {
		t.Fatalf("create without a team: %d %s %+v", st, code, created.App)
	}
	// Password change: old one stops working.
	if st, _ := e.call("PUT", "/api/v1/user/password", bob, PasswordRequest{Current: "bob-password", New: "bob-password-2"}, nil); st != 200 {
		t.Fatalf("change password: %d", st)
	}
	if _, st, _ := e.login("bob", "bob-password"); st != 401 {
		t.Fatalf("old password: %d", st)
	}
}

// TestEveryAppVerbHidesForeignApps walks every registered /apps/:app route:
// a user of another team gets 404 for all of them.
func TestEveryAppVerbHidesForeignApps(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("secret")
	bob := e.addUser("bob", "bobs")
	routes := apiRouteList(t)
	n := 0
	for _, rt := range routes {
		if !strings.HasPrefix(rt.Path, "/api/v1/apps/:app") {
			continue
		}
		n++
		path := strings.NewReplacer(":app", "secret", ":domain", "example.com").Replace(rt.Path)
		t.Run(rt.Method+" "+rt.Path, func(t *testing.T) {
			if st, code := e.call(rt.Method, path, bob, map[string]any{}, nil); st != 404 || code != "not_found" {
				t.Fatalf("got %d %s, want 404 not_found", st, code)
			}
		})
	}
	if n < 15 {
		t.Fatalf("only %d app routes found", n)
	}
	if e.count(`SELECT COUNT(*) FROM events e JOIN apps a ON a.id = e.app_id WHERE a.name = 'secret'`) != 1 {
		t.Fatal("a foreign user changed the app")
	}
}

// apiRouteList returns the API routes as registered.
func apiRouteList(t *testing.T) gin.RoutesInfo {
	t.Helper()
	cfg := baseConfig(t, "dsn", "p", "http://127.0.0.1:1")
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.ln.Close()
	r := httpapi.NewEngine()
	d.api.routes(r)
	return r.Routes()
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Servers []struct{ URL string }                `json:"servers"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") || len(doc.Servers) != 1 || doc.Servers[0].URL != "/api/v1" {
		t.Fatalf("openapi %q servers %+v", doc.OpenAPI, doc.Servers)
	}
	seen := map[string]bool{}
	for _, rt := range apiRouteList(t) {
		p := strings.TrimPrefix(rt.Path, "/api/v1")
		parts := strings.Split(p, "/")
		for i, s := range parts {
			if strings.HasPrefix(s, ":") {
				parts[i] = "{" + s[1:] + "}"
			}
		}
		p = strings.Join(parts, "/")
		m := strings.ToLower(rt.Method)
		seen[m+" "+p] = true
		if _, ok := doc.Paths[p][m]; !ok {
			t.Errorf("openapi.json lacks %s %s", rt.Method, p)
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !seen[m+" "+p] {
				t.Errorf("openapi.json describes %s %s, which is not served", m, p)
			}
		}
	}
	e := newEnv(t, nil)
	resp, err := http.Get(e.url + "/api/v1/openapi.json")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET openapi.json: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestHealthSettings(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	tok := e.admin.Token
	good := common.HealthConfig{Path: "/healthz", StatusMin: 200, StatusMax: 299, Body: "ok", IntervalMS: 1000, TimeoutMS: 500, Fall: 2, Rise: 2, GraceMS: 5000}
	if st, code := e.call("PUT", "/api/v1/apps/web/health", tok, good, nil); st != 200 {
		t.Fatalf("put: %d %s", st, code)
	}
	var got struct{ Health, Effective common.HealthConfig }
	e.call("GET", "/api/v1/apps/web/health", tok, nil, &got)
	if got.Health != good {
		t.Fatalf("got %+v, want %+v", got.Health, good)
	}
	var raw string
	e.pool.QueryRow(`SELECT health_json FROM apps WHERE name = 'web'`).Scan(&raw)
	var stored common.HealthConfig
	if json.Unmarshal([]byte(raw), &stored) != nil || stored != good {
		t.Fatalf("apps.health_json = %s", raw)
	}
	for _, tc := range []struct {
		name string
		h    common.HealthConfig
	}{
		{"relative path", common.HealthConfig{Path: "healthz"}},
		{"status below 100", common.HealthConfig{Path: "/", StatusMin: 99}},
		{"min above max", common.HealthConfig{Path: "/", StatusMin: 300, StatusMax: 200}},
		{"interval too short", common.HealthConfig{IntervalMS: 10}},
		{"timeout above interval", common.HealthConfig{IntervalMS: 1000, TimeoutMS: 2000}},
		{"fall zero is default but 101 is not", common.HealthConfig{Fall: 101}},
		{"negative grace", common.HealthConfig{GraceMS: -1}},
		{"body without path", common.HealthConfig{Body: "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, code := e.call("PUT", "/api/v1/apps/web/health", tok, tc.h, nil); st != 422 || code != "invalid_health" {
				t.Fatalf("got %d %s, want 422 invalid_health", st, code)
			}
		})
	}
	// A TCP check (all defaults) is valid.
	if st, _ := e.call("PUT", "/api/v1/apps/web/health", tok, common.HealthConfig{}, nil); st != 200 {
		t.Fatalf("empty health: %d", st)
	}
}

// fakeVerifier proves the domains listed in ok.
type fakeVerifier struct{ ok map[string]bool }

func (f fakeVerifier) Verify(_ context.Context, domain, token string) error {
	if f.ok[domain] && token != "" {
		return nil
	}
	return errors.New("no record")
}

func TestDomains(t *testing.T) {
	fv := fakeVerifier{ok: map[string]bool{"proven.example.com": true}}
	e := newEnvWith(t, nil, func(d *Dash) { d.svc.verifier = fv })
	admin := e.admin.Token
	e.createApp("one")
	e.createApp("two")
	var out struct{ Domain Domain }
	if st, code := e.call("POST", "/api/v1/apps/one/domains", admin, DomainRequest{Name: "www.example.com"}, &out); st != 201 || !out.Domain.Verified {
		t.Fatalf("admin bind: %d %s %+v", st, code, out)
	}
	if st, code := e.call("POST", "/api/v1/apps/two/domains", admin, DomainRequest{Name: "www.example.com"}, nil); st != 409 || code != "domain_taken" {
		t.Fatalf("second app: %d %s", st, code)
	}
	for _, bad := range []string{"localhost", "-x.example.com", "a..b", "hello.apps.io", "apps.io", "x y.com"} {
		if st, code := e.call("POST", "/api/v1/apps/two/domains", admin, DomainRequest{Name: bad}, nil); st != 422 {
			t.Errorf("domain %q: %d %s, want 422", bad, st, code)
		}
	}

	bob := e.addUser("bob", "bobs")
	if st, _ := e.call("POST", "/api/v1/apps", bob, CreateAppRequest{Name: "bobapp"}, nil); st != 201 {
		t.Fatal("bob create")
	}
	for _, name := range []string{"proven.example.com", "unproven.example.com"} {
		if st, code := e.call("POST", "/api/v1/apps/bobapp/domains", bob, DomainRequest{Name: name}, &out); st != 201 || out.Domain.Verified || out.Domain.Challenge == nil ||
			out.Domain.Challenge.TXTRecord != "_dinp-challenge."+name || !strings.HasSuffix(out.Domain.Challenge.FilePath, out.Domain.Challenge.Token) {
			t.Fatalf("bob claims %s: %d %s %+v", name, st, code, out.Domain)
		}
	}
	if st, code := e.call("POST", "/api/v1/apps/bobapp/domains/unproven.example.com/verify", bob, nil, nil); st != 422 || code != "not_verified" {
		t.Fatalf("verify unproven: %d %s", st, code)
	}
	if st, _ := e.call("POST", "/api/v1/apps/bobapp/domains/proven.example.com/verify", bob, nil, &out); st != 200 || !out.Domain.Verified {
		t.Fatalf("verify proven: %d %+v", st, out)
	}
	if st, code := e.call("POST", "/api/v1/apps/one/domains", admin, DomainRequest{Name: "proven.example.com"}, nil); st != 409 {
		t.Fatalf("admin steals a bound domain: %d %s", st, code)
	}
	var list struct{ Domains []Domain }
	e.call("GET", "/api/v1/apps/bobapp/domains", bob, nil, &list)
	if len(list.Domains) != 2 || !list.Domains[0].Verified || list.Domains[1].Verified {
		t.Fatalf("bob's domains %+v", list.Domains)
	}
	if st, _ := e.call("DELETE", "/api/v1/apps/bobapp/domains/unproven.example.com", bob, nil, nil); st != 200 {
		t.Fatalf("remove: %d", st)
	}
	if e.count(`SELECT COUNT(*) FROM domains`) != 2 {
		t.Fatal("domain rows")
	}
}

// TestDomainClaimExpiry: an unproven claim lasts the claim TTL; then
// another team's claim drops it (an event tells the first team), while a
// verified domain is never taken, however old.
func TestDomainClaimExpiry(t *testing.T) {
	e := newEnvWith(t, nil, func(d *Dash) { d.svc.verifier = fakeVerifier{} })
	admin := e.admin.Token
	bob, carol := e.addUser("bob", "bobs"), e.addUser("carol", "carols")
	for tok, app := range map[string]string{bob: "bobapp", carol: "carolapp"} {
		if st, _ := e.call("POST", "/api/v1/apps", tok, CreateAppRequest{Name: app}, nil); st != 201 {
			t.Fatalf("create %s", app)
		}
	}
	e.createApp("adminapp")
	var out struct{ Domain Domain }
	start := time.Now()
	if st, code := e.call("POST", "/api/v1/apps/bobapp/domains", bob, DomainRequest{Name: "squat.example.com"}, &out); st != 201 {
		t.Fatalf("bob claims: %d %s", st, code)
	}
	if exp := out.Domain.ClaimExpiresAt; exp == nil || exp.Before(start.Add(71*time.Hour)) || exp.After(time.Now().Add(73*time.Hour)) {
		t.Fatalf("claim expiry %v, want ~72h from now", exp)
	}
	// bob's unproven claim blocks nobody: carol claims the name too (and
	// withdraws, to see the expiry below).
	if st, code := e.call("POST", "/api/v1/apps/carolapp/domains", carol, DomainRequest{Name: "squat.example.com"}, nil); st != 201 {
		t.Fatalf("carol during bob's claim: %d %s, want 201", st, code)
	}
	if st, _ := e.call("DELETE", "/api/v1/apps/carolapp/domains/squat.example.com", carol, nil, nil); st != 200 {
		t.Fatal("carol withdraws")
	}
	if st, _ := e.call("POST", "/api/v1/apps/adminapp/domains", admin, DomainRequest{Name: "bound.example.com"}, nil); st != 201 {
		t.Fatal("admin bind")
	}
	// Both rows age past the TTL.
	if _, err := e.pool.Exec(`UPDATE domains SET created_at = NOW(6) - INTERVAL 73 HOUR`); err != nil {
		t.Fatal(err)
	}
	if st, code := e.call("POST", "/api/v1/apps/carolapp/domains", carol, DomainRequest{Name: "bound.example.com"}, nil); st != 409 {
		t.Fatalf("old verified domain taken: %d %s", st, code)
	}
	if st, code := e.call("POST", "/api/v1/apps/carolapp/domains", carol, DomainRequest{Name: "squat.example.com"}, &out); st != 201 || out.Domain.App != "carolapp" {
		t.Fatalf("carol after expiry: %d %s %+v", st, code, out.Domain)
	}
	var list struct{ Domains []Domain }
	e.call("GET", "/api/v1/apps/bobapp/domains", bob, nil, &list)
	if len(list.Domains) != 0 {
		t.Fatalf("bob still holds %+v", list.Domains)
	}
	var evs struct{ Events []Event }
	e.call("GET", "/api/v1/apps/bobapp/events", bob, nil, &evs)
	found := false
	for _, ev := range evs.Events {
		found = found || strings.Contains(ev.Message, "squat.example.com expired")
	}
	if !found {
		t.Fatalf("no expiry event for bob: %+v", evs.Events)
	}
	if n := e.count(`SELECT COUNT(*) FROM domains WHERE name = 'squat.example.com'`); n != 1 {
		t.Fatalf("%d rows for the domain", n)
	}
}
