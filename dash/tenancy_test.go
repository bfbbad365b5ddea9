package dash

import (
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
