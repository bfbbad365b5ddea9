package dash

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// The release status a deploy waits on: healthy, failed (every instance
// crashed 3 times) with the instance's last lines, rolled back with the
// leader's reason and evidence; the app list says crashed when nothing of
// the app runs; events carry their evidence.
func TestReleaseStatus(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	var appID int64
	e.pool.QueryRow(`SELECT id FROM apps WHERE name = 'web'`).Scan(&appID)
	for _, v := range []int{1, 2} {
		mustExec(t, e.pool, `INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares) VALUES (?, ?, 'img', '{}', 64, 256)`, appID, v)
	}
	mustExec(t, e.pool, `UPDATE apps SET current_release = 1 WHERE id = ?`, appID)
	mustExec(t, e.pool, `INSERT INTO instances (id, app_id, release_version, idx, node, state, host_port, restarts, started_at)
		VALUES ('i-old', ?, 1, 0, 'n1', 'running', 32768, 0, NOW(6))`, appID)
	hs, _ := json.Marshal(common.HealthStatus{Instance: "i-old", App: "web", Status: common.Healthy, Since: time.Now()})
	e.rdb.HSet(context.Background(), e.keys.Health(), "i-old", hs)

	status := func(v string) ReleaseStatus {
		t.Helper()
		var st ReleaseStatus
		if code, msg := e.call("GET", "/api/v1/apps/web/releases/"+v+"/status", e.admin.Token, nil, &st); code != 200 {
			t.Fatalf("status v%s: %d %s", v, code, msg)
		}
		return st
	}
	if st := status("1"); st.State != ReleaseHealthy || st.Healthy != 1 || st.Wanted != 1 {
		t.Fatalf("v1: %+v", st)
	}
	if code, msg := e.call("GET", "/api/v1/apps/web/releases/9/status", e.admin.Token, nil, nil); code != 404 {
		t.Errorf("v9: %d %s", code, msg)
	}
	if code, msg := e.call("GET", "/api/v1/apps/web/releases/x/status", e.admin.Token, nil, nil); code != 422 || msg != "invalid_version" {
		t.Errorf("vx: %d %s", code, msg)
	}

	// v2 crashes: twice is not yet final, three times is.
	mustExec(t, e.pool, `UPDATE apps SET current_release = 2 WHERE id = ?`, appID)
	mustExec(t, e.pool, `INSERT INTO instances (id, app_id, release_version, idx, node, state, restarts, last_exit, last_exit_at)
		VALUES ('i-new', ?, 2, 0, 'n1', 'failed', 2, 'exited with code 1 after 0.2 s', NOW(6))`, appID)
	for i := range 25 {
		e.addLog("web", common.LogEntry{Source: common.LogSourceApp, Instance: "i-new", Line: "out " + string(rune('a'+i))})
	}
	e.addLog("web", common.LogEntry{Source: common.LogSourceApp, Instance: "i-old", Line: "not mine"})
	if st := status("2"); st.State != ReleaseDeploying {
		t.Fatalf("v2 after 2 crashes: %+v", st)
	}
	mustExec(t, e.pool, `UPDATE instances SET restarts = 3 WHERE id = 'i-new'`)
	st := status("2")
	if st.State != ReleaseFailed || st.Instance != "i-new" || len(st.Lines) != common.EvidenceLines || st.Lines[19] != "out y" ||
		!strings.Contains(st.Reason, "crashed 3 times, last exited with code 1 after 0.2 s") {
		t.Fatalf("v2 failed: %+v", st)
	}
	var list struct{ Apps []AppSummary }
	e.call("GET", "/api/v1/apps", e.admin.Token, nil, &list)
	if list.Apps[0].State != "serving" { // v1 still serves
		t.Errorf("state with v1 serving: %q", list.Apps[0].State)
	}
	mustExec(t, e.pool, `DELETE FROM instances WHERE id = 'i-old'`)
	e.call("GET", "/api/v1/apps", e.admin.Token, nil, &list)
	if list.Apps[0].State != "crashed" {
		t.Errorf("state with nothing running: %q", list.Apps[0].State)
	}

	// The leader rolled back: the status says so, with its evidence.
	mustExec(t, e.pool, `UPDATE apps SET current_release = 1 WHERE id = ?`, appID)
	mustExec(t, e.pool, `INSERT INTO events (app_id, kind, message, instance, evidence) VALUES (?, 'rollback',
		'release v2 cannot become healthy: every new instance failed (instance i-new crashed 3 times); rolling back to v1', 'i-new', '["boom"]')`, appID)
	st = status("2")
	if st.State != ReleaseRolledBack || st.CurrentRelease != 1 || len(st.Lines) != 1 || st.Lines[0] != "boom" ||
		!strings.HasPrefix(st.Reason, "release v2 cannot become healthy") {
		t.Fatalf("v2 rolled back: %+v", st)
	}
	// The app page shows the evidence and the instance's last exit.
	mustExec(t, e.pool, `INSERT INTO instances (id, app_id, release_version, idx, node, state, restarts, last_exit, last_exit_at)
		VALUES ('i-back', ?, 1, 0, 'n1', 'failed', 1, 'killed: exceeded its 64 MB memory limit after 1.0 s', NOW(6))`, appID)
	b := newBrowser(t, e.url)
	b.login(e.admin.User, e.admin.Password)
	if resp, page := b.get("/apps/web"); resp.StatusCode != 200 || !strings.Contains(page, `<pre class="log evidence">boom`) ||
		!strings.Contains(page, "killed: exceeded its 64 MB memory limit after 1.0 s") {
		t.Errorf("app page: %d\n%s", resp.StatusCode, page)
	}
	var evs struct{ Events []Event }
	e.call("GET", "/api/v1/apps/web/events", e.admin.Token, nil, &evs)
	if evs.Events[0].Kind != "rollback" || evs.Events[0].Instance != "i-new" || len(evs.Events[0].Evidence) != 1 {
		t.Errorf("events: %+v", evs.Events[0])
	}
}
