package reads_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/common/testenv"
)

// fixture is two apps of one team: web (releases 1..4, current 2, an
// instance of 1 on node n1, a release task of 3 on n2, builds) and gone (deleted).
func fixture(t *testing.T) (*sql.DB, int64) {
	t.Helper()
	_, pool := testenv.MySQL(t)
	exec := func(q string, args ...any) int64 {
		t.Helper()
		r, err := pool.Exec(q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		id, _ := r.LastInsertId()
		return id
	}
	team := exec(`INSERT INTO teams (name) VALUES ('t')`)
	web := exec(`INSERT INTO apps (name, team_id, health_json, env_json, constraints_json, current_release) VALUES ('web', ?, '{}', '{}', '[]', 2)`, team)
	for v := 1; v <= 4; v++ {
		exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares) VALUES (?, ?, ?, ?, 64, 256)`,
			web, v, "reg:5000/web@sha256:r"+string(rune('0'+v)), `{"V":"`+string(rune('0'+v))+`"}`)
	}
	exec(`INSERT INTO instances (id, app_id, release_version, idx, node, state) VALUES ('i1', ?, 1, 0, 'n1', 'running')`, web)
	exec(`INSERT INTO tasks (id, app_id, release_version, kind, command_json, state, node, time_limit_s, memory_mb)
		VALUES ('k1', ?, 3, 'release', '[]', ?, 'n2', 60, 64)`, web, common.TaskRunning)
	exec(`INSERT INTO tasks (id, app_id, release_version, kind, command_json, state, node, time_limit_s, memory_mb)
		VALUES ('k2', ?, 2, 'run', '[]', 'succeeded', 'n2', 60, 64)`, web)
	exec(`INSERT INTO node_secrets (node, secret_hash) VALUES ('n1', 'abc')`)
	exec(`INSERT INTO deleted_apps (name) VALUES ('gone')`)
	old := time.Now().Add(-48 * time.Hour).UTC()
	exec(`INSERT INTO builds (app_id, status, stack, image, created_by, started_at, finished_at) VALUES (?, 'succeeded', 'static', 'reg:5000/web@sha256:b-old', 'ann', ?, ?)`, web, old, old.Add(time.Second))
	exec(`INSERT INTO builds (app_id, status, stack, image, created_by, release_command) VALUES (?, 'building', 'python', 'reg:5000/web@sha256:b-new', 'ann', 'migrate')`, web)
	return pool, web
}

func TestDashTables(t *testing.T) {
	pool, web := fixture(t)
	ctx := context.Background()
	if id, err := reads.AppID(ctx, pool, "web"); err != nil || id != web {
		t.Errorf("AppID(web) = %d, %v; want %d", id, err, web)
	}
	if _, err := reads.AppID(ctx, pool, "nope"); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("AppID(nope) err = %v, want sql.ErrNoRows", err)
	}
	if got, err := reads.AppNames(ctx, pool); err != nil || !slices.Equal(got, []string{"web"}) {
		t.Errorf("AppNames = %v, %v", got, err)
	}
	if got, err := reads.DeletedAppNames(ctx, pool); err != nil || !slices.Equal(got, []string{"gone"}) {
		t.Errorf("DeletedAppNames = %v, %v", got, err)
	}
	if env, err := reads.ReleaseEnv(ctx, pool, "web", 2); err != nil || env != `{"V":"2"}` {
		t.Errorf("ReleaseEnv(web, 2) = %q, %v", env, err)
	}
	if _, err := reads.ReleaseEnv(ctx, pool, "web", 9); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("ReleaseEnv(web, 9) err = %v, want sql.ErrNoRows", err)
	}
}

// The registry GC keeps the last N releases, the current one, the running
// ones and recent builds, and nothing else.
func TestRetainedImages(t *testing.T) {
	pool, _ := fixture(t)
	got, err := reads.RetainedImages(context.Background(), pool, 1, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	got = slices.Compact(got)
	want := []string{"reg:5000/web@sha256:b-new", "reg:5000/web@sha256:r1", "reg:5000/web@sha256:r2", "reg:5000/web@sha256:r4"}
	if !slices.Equal(got, want) {
		t.Errorf("RetainedImages(lastN=1) = %v, want %v (last: r4, current: r2, running: r1, unfinished build; not r3 nor the old build)", got, want)
	}
}

func TestServerTables(t *testing.T) {
	pool, _ := fixture(t)
	ctx := context.Background()
	if h, err := reads.NodeSecretHash(ctx, pool, "n1"); err != nil || h != "abc" {
		t.Errorf("NodeSecretHash(n1) = %q, %v", h, err)
	}
	if _, err := reads.NodeSecretHash(ctx, pool, "n9"); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("NodeSecretHash(n9) err = %v", err)
	}
	for node, want := range map[string][]string{
		"n1": {"reg:5000/web@sha256:r1"}, // its instance
		"n2": {"reg:5000/web@sha256:r3"}, // its running task, not its finished one
		"n3": nil,
	} {
		got, err := reads.NodeImages(ctx, pool, node)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("NodeImages(%s) = %v, %v; want %v", node, got, err, want)
		}
	}
}

func TestBuilderTables(t *testing.T) {
	pool, web := fixture(t)
	ctx := context.Background()
	bs, err := reads.Builds(ctx, pool, web, 10)
	if err != nil || len(bs) != 2 {
		t.Fatalf("Builds = %v, %v", bs, err)
	}
	newer, older := bs[0], bs[1]
	if newer.Status != common.BuildBuilding || newer.FinishedAt != nil || older.Status != common.BuildSucceeded ||
		older.FinishedAt == nil || older.StartedAt == nil || older.App != "web" || older.CreatedBy != "ann" {
		t.Errorf("Builds, newest first: %+v", bs)
	}
	if one, err := reads.Builds(ctx, pool, web, 1); err != nil || len(one) != 1 || one[0].ID != newer.ID {
		t.Errorf("Builds limit 1 = %+v, %v", one, err)
	}
	b, err := reads.BuildByID(ctx, pool, older.ID)
	if err != nil || b.Stack != "static" || b.TeamID == 0 {
		t.Errorf("BuildByID = %+v, %v", b, err)
	}
	if _, err := reads.BuildByID(ctx, pool, 1<<40); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("BuildByID(missing) err = %v", err)
	}
	if cmd, err := reads.BuildReleaseCommand(ctx, pool, newer.ID); err != nil || cmd != "migrate" {
		t.Errorf("BuildReleaseCommand = %q, %v", cmd, err)
	}
	if cmd, err := reads.BuildReleaseCommand(ctx, pool, older.ID); err != nil || cmd != "" {
		t.Errorf("BuildReleaseCommand(none) = %q, %v", cmd, err)
	}
	if st, err := reads.BuiltImageStack(ctx, pool, web, "reg:5000/web@sha256:b-old"); err != nil || st != "static" {
		t.Errorf("BuiltImageStack(succeeded) = %q, %v", st, err)
	}
	if _, err := reads.BuiltImageStack(ctx, pool, web, "reg:5000/web@sha256:b-new"); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("BuiltImageStack(unfinished build) err = %v, want sql.ErrNoRows", err)
	}
}

func TestDomainTables(t *testing.T) {
	pool, web := fixture(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO domains (name, app_id, verified) VALUES ('WWW.Example.COM', ?, TRUE)`,
		`INSERT INTO domains (name, app_id, verified) VALUES ('b.example.com', ?, TRUE)`,
		`INSERT INTO domains (name, app_id, verified) VALUES ('claim.example.com', ?, FALSE)`,
	} {
		if _, err := pool.Exec(q, web); err != nil {
			t.Fatal(err)
		}
	}
	want := []reads.VerifiedDomain{{AppID: web, Name: "b.example.com"}, {AppID: web, Name: "www.example.com"}}
	if got, err := reads.VerifiedDomains(ctx, pool); err != nil || !slices.Equal(got, want) {
		t.Errorf("VerifiedDomains = %+v, %v; want %+v", got, err, want)
	}

	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO domain_certs (name, state, issuer, not_after) VALUES ('www.example.com', 'issued', 'CA 1', ?)`, []any{exp}},
		{`INSERT INTO domain_certs (name, state, last_error) VALUES ('b.example.com', 'failing', 'refused')`, nil},
		{`INSERT INTO domain_certs (name, state) VALUES ('claim.example.com', 'issued')`, nil},
	} {
		if _, err := pool.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := reads.AppDomainCerts(ctx, pool, web)
	if err != nil {
		t.Fatal(err)
	}
	if c := got["www.example.com"]; c.State != common.CertIssued || c.Issuer != "CA 1" || c.NotAfter == nil || !c.NotAfter.Equal(exp) {
		t.Errorf("issued: %+v", c)
	}
	if c := got["b.example.com"]; c.State != common.CertFailing || c.LastError != "refused" || c.NotAfter != nil {
		t.Errorf("failing: %+v", c)
	}
	if c, ok := got["claim.example.com"]; ok || len(got) != 2 {
		t.Errorf("an unverified claim's certificate listed: %+v (%d)", c, len(got))
	}
}
