package dash

import (
	"strings"
	"testing"
)

// TestClaimsNeverBlockTheOwner plays mallory, who claims the domain of
// alice's shop before alice does: alice still claims it, proves it and
// takes it (mallory's claim goes, with an event), and mallory cannot claim
// it back; an admin's binding likewise overrides a pending claim; a team's
// unproven claims are capped.
func TestClaimsNeverBlockTheOwner(t *testing.T) {
	fv := fakeVerifier{ok: map[string]bool{"shop.example.com": true}}
	e := newEnvWith(t, nil, func(d *Dash) { d.svc.verifier = fv })
	mallory, alice := e.addUser("mallory", "mals"), e.addUser("alice", "alices")
	for tok, app := range map[string]string{mallory: "malapp", alice: "shop"} {
		if st, _ := e.call("POST", "/api/v1/apps", tok, CreateAppRequest{Name: app}, nil); st != 201 {
			t.Fatalf("create %s", app)
		}
	}
	claim := func(tok, app, name string) (int, string) {
		return e.call("POST", "/api/v1/apps/"+app+"/domains", tok, DomainRequest{Name: name}, nil)
	}
	if st, code := claim(mallory, "malapp", "shop.example.com"); st != 201 {
		t.Fatalf("mallory claims: %d %s", st, code)
	}
	if st, code := claim(alice, "shop", "shop.example.com"); st != 201 {
		t.Fatalf("alice claims her domain after mallory: %d %s, want 201", st, code)
	}
	var out struct{ Domain Domain }
	if st, code := e.call("POST", "/api/v1/apps/shop/domains/shop.example.com/verify", alice, nil, &out); st != 200 || !out.Domain.Verified {
		t.Fatalf("alice proves it: %d %s %+v", st, code, out)
	}
	if n := e.count(`SELECT COUNT(*) FROM domains d JOIN apps a ON a.id = d.app_id WHERE a.name = 'malapp'`); n != 0 {
		t.Fatalf("mallory still holds %d claims", n)
	}
	var evs struct{ Events []Event }
	e.call("GET", "/api/v1/apps/malapp/events", mallory, nil, &evs)
	told := false
	for _, ev := range evs.Events {
		told = told || strings.Contains(ev.Message, "shop.example.com dropped")
	}
	if !told {
		t.Errorf("no event for mallory: %+v", evs.Events)
	}
	if st, code := claim(mallory, "malapp", "shop.example.com"); st != 409 || code != "domain_taken" {
		t.Fatalf("mallory claims a bound domain: %d %s, want 409 domain_taken", st, code)
	}

	// An admin binds a name someone claimed: at once, the claim goes.
	e.createApp("adminapp")
	if st, _ := claim(mallory, "malapp", "corp.example.com"); st != 201 {
		t.Fatal("mallory claims corp")
	}
	if st, code := claim(e.admin.Token, "adminapp", "corp.example.com"); st != 201 {
		t.Fatalf("admin binds a claimed name: %d %s", st, code)
	}
	if n := e.count(`SELECT COUNT(*) FROM domains WHERE name = 'corp.example.com'`); n != 1 {
		t.Fatalf("%d rows for corp.example.com, want the admin's binding only", n)
	}

	// Claims are capped per team.
	var limits struct{ Limits TeamLimits }
	e.call("GET", "/api/v1/teams/mals/limits", mallory, nil, &limits)
	max := limits.Limits.MaxDomainClaims
	if max <= 0 {
		t.Fatalf("team limits %+v", limits)
	}
	for i := 0; i < max; i++ {
		if st, code := claim(mallory, "malapp", "x"+strings.Repeat("y", i)+".example.com"); st != 201 {
			t.Fatalf("claim %d of %d: %d %s", i+1, max, st, code)
		}
	}
	if st, code := claim(mallory, "malapp", "one-too-many.example.com"); st != 403 || code != "quota_exceeded" {
		t.Fatalf("claim over the cap: %d %s, want 403 quota_exceeded", st, code)
	}
}
