package server

import (
	"fmt"
	"testing"
	"time"
)

// TestPlacementHonoursAdminLabels: a label an admin set on a node
// (nodes.admin_labels_json, written by PUT /api/v1/nodes/{id}/labels) wins
// over the agent's label of the same key, survives the agent's heartbeats
// rewriting the node's row, and decides placement.
func TestPlacementHonoursAdminLabels(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	waitFor(t, "leadership", 5*time.Second, func() (bool, string) { return s.IsLeader(), "" })

	n1 := newFakeAgent(url, "n1", "127.0.0.11", 1024)
	n2 := newFakeAgent(url, "n2", "127.0.0.12", 1024)
	for _, a := range []*fakeAgent{n1, n2} {
		a.labels = map[string]string{"zone": "a"}
		a.start(t)
	}
	waitFor(t, "both node rows", 5*time.Second, func() (bool, string) {
		var n int
		e.pool.QueryRow(`SELECT COUNT(*) FROM nodes WHERE labels_json LIKE '%"zone":"a"%'`).Scan(&n)
		return n == 2, fmt.Sprint(n)
	})
	if _, err := e.pool.Exec(`UPDATE nodes SET admin_labels_json = '{"zone":"b"}' WHERE id = 'n2'`); err != nil {
		t.Fatal(err)
	}
	app := e.insertApp(t, "zoned", 0, 128)
	if _, err := e.pool.Exec(`UPDATE apps SET constraints_json = '{"zone":"b"}', instances = 2 WHERE id = ?`, app); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both instances on the admin-labelled node", 5*time.Second, func() (bool, string) {
		_, r1 := n1.state()
		_, r2 := n2.state()
		return len(r2.Assignments) == 2 && len(r1.Assignments) == 0, fmt.Sprintf("n1 %v, n2 %v", instancesOn(r1.Assignments), instancesOn(r2.Assignments))
	})

	// The agent keeps reporting zone=a: its row is rewritten, the admin's
	// label stays and keeps deciding.
	if _, err := e.pool.Exec(`UPDATE nodes SET last_seen_at = '2000-01-01' WHERE id = 'n2'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's heartbeat rewrites its row", 5*time.Second, func() (bool, string) {
		var seen time.Time
		e.pool.QueryRow(`SELECT last_seen_at FROM nodes WHERE id = 'n2'`).Scan(&seen)
		return seen.Year() > 2000, seen.String()
	})
	var agent, admin string
	e.pool.QueryRow(`SELECT labels_json, admin_labels_json FROM nodes WHERE id = 'n2'`).Scan(&agent, &admin)
	if agent != `{"zone":"a"}` || admin != `{"zone":"b"}` {
		t.Fatalf("labels after a heartbeat: agent %s, admin %s", agent, admin)
	}
	if _, r1 := n1.state(); len(r1.Assignments) != 0 {
		t.Fatalf("an instance moved to the node without the label: %v", instancesOn(r1.Assignments))
	}
}
