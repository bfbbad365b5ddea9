package dash

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// TestClusterComponents: GET /api/v1/cluster and the Cluster page show what
// the components last reported of themselves — the leader, each router's
// route version and lag behind routes:version, each hm's share, the
// registry's disk use — leave out members silent for too long, and flag
// agents and components older than the newest server.
func TestClusterComponents(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	now := time.Now().UTC()
	i64 := func(v int64) *int64 { return &v }
	i := func(v int) *int { return &v }
	report := func(role string, st common.ComponentStatus) {
		raw, _ := json.Marshal(st)
		if err := e.rdb.HSet(ctx, e.keys.Status(role), st.ID, raw).Err(); err != nil {
			t.Fatal(err)
		}
	}
	report(common.RoleServer, common.ComponentStatus{ID: "srv-1", Version: "v1.5.0", At: now, Leader: true, Addr: "10.0.0.1:7000"})
	report(common.RoleServer, common.ComponentStatus{ID: "srv-2", Version: "v1.5.0", At: now})
	report(common.RoleServer, common.ComponentStatus{ID: "srv-gone", Version: "v1.6.0", At: now.Add(-time.Minute)})
	report(common.RoleRouter, common.ComponentStatus{ID: "rtr-a", Version: "v1.5.0", At: now, RoutesVersion: i64(40), Routes: i(7)})
	report(common.RoleRouter, common.ComponentStatus{ID: "rtr-b", Version: "v1.4.9", At: now, RoutesVersion: i64(42), Routes: i(7)})
	report(common.RoleHM, common.ComponentStatus{ID: "hm-1", Version: "v1.5.0", At: now, Probing: i(30)})
	report(common.RoleHM, common.ComponentStatus{ID: "hm-2", Version: "v1.5.0", At: now, Probing: i(10)})
	report(common.RoleRegistry, common.ComponentStatus{ID: "reg", Version: "v1.5.0", At: now, DiskBytes: i64(3 << 30)})
	e.rdb.Set(ctx, e.keys.RoutesVersion(), 42, 0)
	e.rdb.Set(ctx, e.keys.Leader(), "srv-1", 0)
	if _, err := e.pool.Exec(`INSERT INTO nodes (id, address, labels_json, memory_mb, cpus) VALUES
		('new', '10.0.0.2', '{}', 1024, 1), ('old', '10.0.0.3', '{}', 1024, 1), ('older', '10.0.0.4', '{}', 1024, 1)`); err != nil {
		t.Fatal(err)
	}
	at := now.Format(time.RFC3339Nano)
	e.rdb.Set(ctx, e.keys.Node("new"), fmt.Sprintf(`{"node":"new","agent_version":"v1.5.0","protocol":2,"at":%q}`, at), time.Minute)
	e.rdb.Set(ctx, e.keys.Node("old"), fmt.Sprintf(`{"node":"old","agent_version":"v1.4.0","protocol":2,"at":%q}`, at), time.Minute)
	e.rdb.Set(ctx, e.keys.Node("older"), fmt.Sprintf(`{"node":"older","at":%q}`, at), time.Minute) // protocol 1: no version

	var cl struct {
		Leader        string `json:"leader"`
		ServerVersion string `json:"server_version"`
		RoutesVersion int64  `json:"routes_version"`
		Servers       []struct {
			ID     string `json:"id"`
			Leader bool   `json:"leader"`
		} `json:"servers"`
		Routers []struct {
			ID       string `json:"id"`
			Lag      *int64 `json:"lag"`
			Outdated bool   `json:"outdated"`
		} `json:"routers"`
		HM []struct {
			ID    string   `json:"id"`
			Share *float64 `json:"share"`
		} `json:"hm"`
		Registries []struct {
			DiskBytes *int64 `json:"disk_bytes"`
		} `json:"registries"`
	}
	if status, code := e.call(http.MethodGet, "/api/v1/cluster", e.admin.Token, nil, &cl); status != http.StatusOK {
		t.Fatalf("cluster: %d %s", status, code)
	}
	if cl.Leader != "srv-1" || cl.ServerVersion != "v1.5.0" || cl.RoutesVersion != 42 || len(cl.Servers) != 2 || !cl.Servers[0].Leader {
		t.Fatalf("cluster: %+v", cl)
	}
	if len(cl.Routers) != 2 || *cl.Routers[0].Lag != 2 || *cl.Routers[1].Lag != 0 || cl.Routers[0].Outdated || !cl.Routers[1].Outdated {
		t.Fatalf("routers: %+v", cl.Routers)
	}
	if len(cl.HM) != 2 || *cl.HM[0].Share != 0.75 || *cl.HM[1].Share != 0.25 {
		t.Fatalf("hm: %+v", cl.HM)
	}
	if len(cl.Registries) != 1 || *cl.Registries[0].DiskBytes != 3<<30 {
		t.Fatalf("registries: %+v", cl.Registries)
	}
	if e.rdb.HExists(ctx, e.keys.Status(common.RoleServer), "srv-gone").Val() != true {
		t.Fatal("a member silent for a minute was deleted (only long-silent ones are)")
	}

	var list struct {
		Nodes []Node `json:"nodes"`
	}
	e.call(http.MethodGet, "/api/v1/nodes", e.admin.Token, nil, &list)
	outdated := map[string]bool{}
	for _, n := range list.Nodes {
		outdated[n.ID] = n.Outdated
	}
	if outdated["new"] || !outdated["old"] || !outdated["older"] || list.Nodes[0].AgentVersion != "v1.5.0" {
		t.Fatalf("nodes: %+v", list.Nodes)
	}
	if status, _ := e.call(http.MethodGet, "/api/v1/cluster", e.addUser("viewer", "t-viewer"), nil, nil); status != http.StatusForbidden {
		t.Fatalf("non-admin cluster: %d", status)
	}

	b := newBrowser(t, e.url)
	csrf := b.login(e.admin.User, e.admin.Password)
	// The label form of the Cluster page takes the CLI's syntax.
	if resp, _ := b.post("/cluster/nodes/new/labels", url.Values{"csrf": {csrf}, "labels": {"zone=b disk=ssd"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("label form: %d", resp.StatusCode)
	}
	var admin string
	e.pool.QueryRow(`SELECT admin_labels_json FROM nodes WHERE id = 'new'`).Scan(&admin)
	if admin != `{"disk":"ssd","zone":"b"}` {
		t.Fatalf("label form stored %q", admin)
	}
	resp, page := b.get("/cluster")
	for _, want := range []string{"zone=b", `id="routes-version">42<`, "rtr-a", "routes v40 (7 hosts)", "lag 2", "hm-1", "probes 30 instances (75%)",
		"disk 3.00 GB", "v1.4.0</code> <span class=\"badge outdated\"", "srv-1"} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, want) {
			t.Fatalf("cluster page lacks %q (%d):\n%s", want, resp.StatusCode, page)
		}
	}
	if strings.Contains(page, "srv-gone") {
		t.Fatal("cluster page shows a silent server")
	}
}
