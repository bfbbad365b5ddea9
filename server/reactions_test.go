package server

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// setHealth writes hm's verdict and announces it, as hm does.
func (e *env) setHealth(t *testing.T, inst, status string, since time.Time, errMsg string) {
	t.Helper()
	ctx := context.Background()
	hs, _ := json.Marshal(common.HealthStatus{Instance: inst, App: "web", Status: status, Since: since, Error: errMsg})
	if err := e.rdb.HSet(ctx, e.keys.Health(), inst, hs).Err(); err != nil {
		t.Fatal(err)
	}
	e.rdb.Publish(ctx, e.keys.HealthEvents(), hs)
}

// events returns the messages of an app's events of one kind, oldest first.
func (e *env) events(t *testing.T, app int64, kind string) []string {
	t.Helper()
	rows, err := e.pool.Query(`SELECT message FROM events WHERE app_id = ? AND kind = ? ORDER BY id`, app, kind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var m string
		rows.Scan(&m)
		out = append(out, m)
	}
	return out
}

// routedHealth is instance → healthy flag of the web route.
func (e *env) routedHealth(t *testing.T) map[string]bool {
	r, _ := e.route(t, "web.apps.io")
	h := map[string]bool{}
	for _, b := range r.Backends {
		h[b.Instance] = b.Healthy
	}
	return h
}

// Health reactions: flips become events with the last error, the route
// follows hm at once, "every instance unhealthy" is one fail-open event, and
// an instance unhealthy beyond the liveness limit is replaced — replacement
// first, the old one stopped only once the new one is healthy.
func TestServerHealthReactions(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.LivenessLimit = 2 * time.Second
	appID := e.insertApp(t, "web", 2, 128)
	s := startServer(t, cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	waitFor(t, "two backends", 10*time.Second, func() (bool, string) {
		h := e.routedHealth(t)
		return len(h) == 2, fmt.Sprint(h)
	})
	var insts []string
	for id := range e.routedHealth(t) {
		insts = append(insts, id)
	}
	slices.Sort(insts)
	a, b := insts[0], insts[1]

	now := time.Now()
	e.setHealth(t, a, common.Healthy, now, "")
	e.setHealth(t, b, common.Healthy, now, "")
	waitFor(t, "both healthy in the route", 5*time.Second, func() (bool, string) {
		h := e.routedHealth(t)
		return h[a] && h[b], fmt.Sprint(h)
	})
	waitFor(t, "two health events", 5*time.Second, func() (bool, string) {
		ev := e.events(t, appID, EventHealth)
		return len(ev) == 2, fmt.Sprint(ev)
	})

	// Both fail (recently: within the liveness limit for now).
	e.setHealth(t, a, common.Unhealthy, time.Now(), "connection refused")
	e.setHealth(t, b, common.Unhealthy, time.Now(), "status 500")
	waitFor(t, "fail-open event", 5*time.Second, func() (bool, string) {
		ev := e.events(t, appID, EventFailOpen)
		return len(ev) == 1 && strings.Contains(ev[0], "fail open"), fmt.Sprint(ev)
	})
	ev := e.events(t, appID, EventHealth)
	if len(ev) != 4 || !strings.Contains(strings.Join(ev, "\n"), a+" (index") ||
		!strings.Contains(strings.Join(ev, "\n"), "unhealthy: connection refused") {
		t.Fatalf("health events %q", ev)
	}

	// Past the liveness limit: replacements are placed, the old ones stay.
	waitFor(t, "replacements placed beside the unhealthy", 10*time.Second, func() (bool, string) {
		_, r := n1.state()
		ids := instancesOn(r.Assignments)
		return len(ids) == 4 && slices.Contains(ids, a) && slices.Contains(ids, b), fmt.Sprint(ids)
	})
	_, r := n1.state()
	var fresh []string
	for _, id := range instancesOn(r.Assignments) {
		if id != a && id != b {
			fresh = append(fresh, id)
		}
	}
	waitFor(t, "replacements routed", 5*time.Second, func() (bool, string) {
		h := e.routedHealth(t)
		return len(h) == 4, fmt.Sprint(h)
	})
	for _, id := range fresh {
		e.setHealth(t, id, common.Healthy, time.Now(), "")
	}
	waitFor(t, "old instances out once replacements serve", 5*time.Second, func() (bool, string) {
		h := e.routedHealth(t)
		return len(h) == 2 && h[fresh[0]] && h[fresh[1]], fmt.Sprint(h)
	})
	waitFor(t, "fail-open recovery and replace events", 5*time.Second, func() (bool, string) {
		fo := e.events(t, appID, EventFailOpen)
		rp := e.events(t, appID, "replace")
		return len(fo) == 2 && len(rp) >= 2, fmt.Sprint(fo, rp)
	})
}

// A container restarting again and again is one crash_loop event.
func TestServerCrashLoopEvent(t *testing.T) {
	e := newEnv(t)
	appID := e.insertApp(t, "web", 1, 128)
	s := startServer(t, e.cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	waitFor(t, "routed", 10*time.Second, func() (bool, string) {
		return len(e.routedHealth(t)) == 1, ""
	})
	for i := 1; i <= 5; i++ {
		n1.set(func(a *fakeAgent) { a.restarts = i })
		waitFor(t, "restart count stored", 5*time.Second, func() (bool, string) {
			var n int
			e.pool.QueryRow(`SELECT restarts FROM instances WHERE app_id = ?`, appID).Scan(&n)
			return n == i, fmt.Sprint(n)
		})
	}
	ev := e.events(t, appID, EventCrashLoop)
	if len(ev) != 1 || !strings.Contains(ev[0], "restarted 3 times") {
		t.Fatalf("crash loop events %q, want one", ev)
	}
}

// Process ends are events with the reason; oom, exit and crash_loop events
// carry the instance's last output lines from its log stream, and the row
// keeps the last exit for `dinp ps`.
func TestServerExitEventsCarryEvidence(t *testing.T) {
	e := newEnv(t)
	appID := e.insertApp(t, "web", 1, 128)
	s := startServer(t, e.cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	var inst string
	waitFor(t, "routed", 10*time.Second, func() (bool, string) {
		for id := range e.routedHealth(t) {
			inst = id
		}
		return inst != "", ""
	})
	ctx := context.Background()
	for i := range 25 {
		raw, _ := json.Marshal(common.LogEntry{Source: common.LogSourceApp, Instance: inst, Line: fmt.Sprintf("line %d", i), At: time.Now()})
		e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.keys.Logs("web"), Values: map[string]any{"e": raw}})
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	n1.set(func(a *fakeAgent) {
		a.lastExit = &common.Exit{Code: 137, OOM: true, MemoryMB: 128, RuntimeMS: 1500, At: at}
	})
	waitFor(t, "oom event", 10*time.Second, func() (bool, string) {
		ev := e.events(t, appID, "oom")
		return len(ev) == 1 && strings.Contains(ev[0], "killed: exceeded its 128 MB memory limit after 1.5 s"), fmt.Sprint(ev)
	})
	var evidence, lastExit string
	if err := e.pool.QueryRow(`SELECT COALESCE(evidence, '') FROM events WHERE app_id = ? AND kind = 'oom'`, appID).Scan(&evidence); err != nil {
		t.Fatal(err)
	}
	var lines []string
	if err := json.Unmarshal([]byte(evidence), &lines); err != nil || len(lines) != common.EvidenceLines ||
		lines[0] != "line 5" || lines[19] != "line 24" {
		t.Fatalf("evidence %q (%v)", evidence, err)
	}
	e.pool.QueryRow(`SELECT COALESCE(last_exit, '') FROM instances WHERE id = ?`, inst).Scan(&lastExit)
	if !strings.HasPrefix(lastExit, "killed: exceeded its 128 MB") {
		t.Errorf("last_exit %q", lastExit)
	}
	// A plain exit is an instance_exited event; three restarts a crash loop
	// with the same evidence.
	n1.set(func(a *fakeAgent) { a.lastExit = &common.Exit{Code: 1, RuntimeMS: 200, At: at.Add(time.Second)} })
	for i := 1; i <= 3; i++ {
		n1.set(func(a *fakeAgent) { a.restarts = i })
		waitFor(t, "restart count stored", 5*time.Second, func() (bool, string) {
			var n int
			e.pool.QueryRow(`SELECT restarts FROM instances WHERE app_id = ?`, appID).Scan(&n)
			return n == i, fmt.Sprint(n)
		})
	}
	waitFor(t, "exit and crash loop events", 5*time.Second, func() (bool, string) {
		ex, cl := e.events(t, appID, "instance_exited"), e.events(t, appID, EventCrashLoop)
		return len(ex) == 1 && strings.Contains(ex[0], "exited with code 1 after 0.2 s") && len(cl) == 1, fmt.Sprint(ex, cl)
	})
	var n int
	e.pool.QueryRow(`SELECT COUNT(*) FROM events WHERE app_id = ? AND kind IN ('crash_loop', 'instance_exited') AND evidence LIKE '%line 24%'`, appID).Scan(&n)
	if n != 2 {
		t.Errorf("%d exit/crash_loop events with evidence, want 2", n)
	}
}

// Restarting the server changes nothing: same rows (not even updated_at),
// same assignments, no container to recreate.
func TestServerRestartChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.insertApp(t, "web", 3, 128)
	e.insertApp(t, "api", 2, 128)
	cfg := e.cfg
	s1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- s1.Run(ctx1) }()
	defer stop1()

	url := "http://" + s1.Addr()
	n1 := newFakeAgent(url, "n1", "127.0.0.11", 1024)
	n2 := newFakeAgent(url, "n2", "127.0.0.12", 1024)
	for _, n := range []*fakeAgent{n1, n2} {
		n.set(func(a *fakeAgent) { a.running = true })
		n.start(t)
	}
	snapshot := func() string {
		rows, err := e.pool.Query(`SELECT id, node, state, host_port, container_id, restarts, updated_at FROM instances ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var id, node, state, cid string
			var port, restarts int
			var at time.Time
			rows.Scan(&id, &node, &state, &port, &cid, &restarts, &at)
			fmt.Fprintf(&b, "%s %s %s %d %s %d %s\n", id, node, state, port, cid, restarts, at.Format(time.RFC3339Nano))
		}
		assigned := e.rdb.HGetAll(context.Background(), e.keys.Assignments()).Val()
		for _, k := range []string{"n1", "n2"} {
			// A node without instances may have no list yet or an empty
			// one (whether the leader knew it when it last wrote): the
			// agent does the same with both.
			list := assigned[k]
			if list == "" {
				list = "[]"
			}
			fmt.Fprintf(&b, "%s=%s\n", k, list)
		}
		return b.String()
	}
	waitFor(t, "five running instances", 10*time.Second, func() (bool, string) {
		snap := snapshot()
		return strings.Count(snap, " running ") == 5, snap
	})
	before := snapshot()

	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	cfg.ID = "test-server-2"
	s2 := startServer(t, cfg)
	n1.set(func(a *fakeAgent) { a.url = "http://" + s2.Addr() })
	n2.set(func(a *fakeAgent) { a.url = "http://" + s2.Addr() })
	waitFor(t, "new leader", 10*time.Second, func() (bool, string) {
		return s2.IsLeader() && e.rdb.Get(context.Background(), e.keys.Leader()).Val() == "test-server-2", ""
	})
	// Several rounds, past the new leader's 3-interval grace for silent nodes.
	deadline := time.Now().Add(6 * cfg.HeartbeatInterval)
	for time.Now().Before(deadline) {
		if after := snapshot(); after != before {
			t.Fatalf("server restart changed state:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
