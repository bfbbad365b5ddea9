package dash

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestNodesForAdmins: admins list nodes with their reserved memory,
// instances, heartbeat and state, drain and undrain them (recorded as
// events, announced to the leader), and forget only a lost empty node;
// other users are refused.
func TestNodesForAdmins(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO nodes (id, address, labels_json, memory_mb, cpus) VALUES
			('n1', '10.0.0.1', '{"zone":"a"}', 4096, 2), ('n2', '10.0.0.2', '{}', 2048, 1), ('gone', '10.0.0.9', '{}', 1024, 1)`,
		`INSERT INTO teams (name) VALUES ('t-nodes')`,
		`INSERT INTO apps (name, team_id, instances, memory_mb, health_json, env_json, constraints_json)
			SELECT 'web', id, 2, 256, '{}', '{}', '{}' FROM teams WHERE name = 't-nodes'`,
		`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
			SELECT id, 1, 'img', '{}', 256, 256 FROM apps WHERE name = 'web'`,
		`INSERT INTO instances (id, app_id, release_version, idx, node, state)
			SELECT 'i1', id, 1, 0, 'n1', 'running' FROM apps WHERE name = 'web'`,
		`INSERT INTO instances (id, app_id, release_version, idx, node, state)
			SELECT 'i2', id, 1, 1, 'n1', 'pending' FROM apps WHERE name = 'web'`,
		`INSERT INTO node_secrets (node, secret_hash) VALUES ('gone', REPEAT('a', 64))`,
	} {
		if _, err := e.pool.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	at := time.Now().UTC().Add(-1500 * time.Millisecond)
	for _, n := range []string{"n1", "n2"} {
		e.rdb.Set(ctx, e.keys.Node(n), fmt.Sprintf(`{"node":%q,"at":%q}`, n, at.Format(time.RFC3339Nano)), time.Minute)
	}
	e.rdb.Set(ctx, e.keys.Leader(), "srv-7", 0)

	var list struct {
		Nodes  []Node `json:"nodes"`
		Leader string `json:"leader"`
	}
	if status, code := e.call(http.MethodGet, "/api/v1/nodes", e.admin.Token, nil, &list); status != http.StatusOK {
		t.Fatalf("list: %d %s", status, code)
	}
	if list.Leader != "srv-7" || len(list.Nodes) != 3 {
		t.Fatalf("list: leader %q, %d nodes", list.Leader, len(list.Nodes))
	}
	got := map[string]Node{}
	for _, n := range list.Nodes {
		got[n.ID] = n
	}
	n1 := got["n1"]
	if n1.State != NodeReady || n1.Instances != 2 || n1.ReservedMB != 512 || n1.MemoryMB != 4096 || n1.Labels["zone"] != "a" ||
		n1.HeartbeatAge == nil || *n1.HeartbeatAge < 1 || *n1.HeartbeatAge > 30 {
		t.Fatalf("n1: %+v", n1)
	}
	if got["gone"].State != NodeLost || got["gone"].LastHeartbeat != nil || got["n2"].Instances != 0 {
		t.Fatalf("gone %+v, n2 %+v", got["gone"], got["n2"])
	}

	user := e.addUser("nodeless", "t-user")
	if status, code := e.call(http.MethodGet, "/api/v1/nodes", user, nil, nil); status != http.StatusForbidden {
		t.Fatalf("non-admin list: %d %s", status, code)
	}
	if status, _ := e.call(http.MethodPost, "/api/v1/nodes/n1/drain", user, nil, nil); status != http.StatusForbidden {
		t.Fatalf("non-admin drain: %d", status)
	}

	sub := e.rdb.Subscribe(ctx, e.keys.DesiredChanged())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	var one struct{ Node Node }
	if status, code := e.call(http.MethodPost, "/api/v1/nodes/n1/drain", e.admin.Token, nil, &one); status != http.StatusOK || one.Node.State != NodeDraining {
		t.Fatalf("drain: %d %s %+v", status, code, one.Node)
	}
	if msg, err := sub.ReceiveMessage(ctx); err != nil || msg.Payload != "node:n1" {
		t.Fatalf("leader not told: %v %v", msg, err)
	}
	var drain bool
	e.pool.QueryRow(`SELECT drain FROM nodes WHERE id = 'n1'`).Scan(&drain)
	if !drain {
		t.Fatal("drain flag not stored")
	}
	if status, _ := e.call(http.MethodPost, "/api/v1/nodes/n1/undrain", e.admin.Token, nil, &one); status != http.StatusOK || one.Node.State != NodeReady {
		t.Fatalf("undrain: %d %+v", status, one.Node)
	}
	var shown struct {
		Events []NodeEvent `json:"events"`
	}
	e.call(http.MethodGet, "/api/v1/nodes/n1", e.admin.Token, nil, &shown)
	if len(shown.Events) != 2 || shown.Events[0].Kind != "undrain" || shown.Events[1].Kind != "drain" || shown.Events[0].By != e.admin.User {
		t.Fatalf("events %+v", shown.Events)
	}
	if status, _ := e.call(http.MethodPost, "/api/v1/nodes/nope/drain", e.admin.Token, nil, nil); status != http.StatusNotFound {
		t.Fatalf("drain unknown node: %d", status)
	}

	// A node that beats, or that holds instances, is not forgotten.
	for _, id := range []string{"n1", "n2"} {
		if status, code := e.call(http.MethodDelete, "/api/v1/nodes/"+id, e.admin.Token, nil, nil); status != http.StatusConflict || code != "node_busy" {
			t.Fatalf("forget %s: %d %s", id, status, code)
		}
	}
	e.rdb.SAdd(ctx, e.keys.Nodes(), "gone")
	if status, code := e.call(http.MethodDelete, "/api/v1/nodes/gone", e.admin.Token, nil, nil); status != http.StatusNoContent {
		t.Fatalf("forget gone: %d %s", status, code)
	}
	var rows, secrets int
	e.pool.QueryRow(`SELECT COUNT(*) FROM nodes WHERE id = 'gone'`).Scan(&rows)
	e.pool.QueryRow(`SELECT COUNT(*) FROM node_secrets WHERE node = 'gone'`).Scan(&secrets)
	if rows != 0 || secrets != 0 || e.rdb.SIsMember(ctx, e.keys.Nodes(), "gone").Val() {
		t.Fatalf("forgotten node left: row %d, identity %d, member %v", rows, secrets, e.rdb.SIsMember(ctx, e.keys.Nodes(), "gone").Val())
	}
}

// TestClusterPage: the Cluster page shows admins each node's state, memory
// and the leader, and its Drain button drains; other users get 403 and no
// Cluster link.
func TestClusterPage(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.pool.Exec(`INSERT INTO nodes (id, address, labels_json, memory_mb, cpus) VALUES ('web-1', '10.0.0.1', '{"disk":"ssd"}', 4096, 2)`); err != nil {
		t.Fatal(err)
	}
	e.rdb.Set(ctx, e.keys.Node("web-1"), fmt.Sprintf(`{"node":"web-1","at":%q}`, time.Now().UTC().Format(time.RFC3339Nano)), time.Minute)
	e.rdb.Set(ctx, e.keys.Leader(), "srv-9", 0)

	b := newBrowser(t, e.url)
	csrf := b.login(e.admin.User, e.admin.Password)
	resp, page := b.get("/cluster")
	for _, want := range []string{"web-1", "10.0.0.1", `class="badge ready"`, "0/4096 MB", "disk=ssd", "srv-9", "Drain"} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, want) {
			t.Fatalf("cluster page lacks %q (%d):\n%s", want, resp.StatusCode, page)
		}
	}
	if resp, _ := b.post("/cluster/nodes/web-1/drain", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("drain form: %d", resp.StatusCode)
	}
	if _, page := b.get("/cluster"); !strings.Contains(page, `class="badge draining"`) || !strings.Contains(page, "Undrain") {
		t.Fatalf("after drain:\n%s", page)
	}

	e.addUser("plain", "t-plain")
	hash, _ := bcrypt.GenerateFromPassword([]byte("plain-password-1"), bcrypt.MinCost)
	if _, err := e.pool.Exec(`UPDATE users SET password_hash = ? WHERE name = 'plain'`, string(hash)); err != nil {
		t.Fatal(err)
	}
	u := newBrowser(t, e.url)
	u.login("plain", "plain-password-1")
	if resp, _ := u.get("/cluster"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("non-admin cluster page: %d", resp.StatusCode)
	}
	if _, page := u.get("/apps"); strings.Contains(page, `href="/cluster"`) {
		t.Fatal("non-admin sees the Cluster link")
	}
}
