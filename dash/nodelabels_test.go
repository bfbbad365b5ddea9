package dash

import (
	"context"
	"net/http"
	"testing"
)

// TestNodeLabelsAPI: an admin sets and removes a node's admin labels; they
// win over the agent's on the same key, are stored apart from them (so the
// agent's heartbeat cannot overwrite them), each change is a node event,
// the leader is told, and bad input or a plain user is refused with nothing
// written.
func TestNodeLabelsAPI(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.pool.Exec(`INSERT INTO nodes (id, address, labels_json, memory_mb, cpus) VALUES ('n1', '10.0.0.1', '{"zone":"a","disk":"hdd"}', 4096, 2)`); err != nil {
		t.Fatal(err)
	}
	sub := e.rdb.Subscribe(ctx, e.keys.DesiredChanged())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	var one struct{ Node Node }
	set := map[string]any{"labels": map[string]any{"zone": "b", "gpu": "yes"}}
	if status, code := e.call(http.MethodPut, "/api/v1/nodes/n1/labels", e.admin.Token, set, &one); status != http.StatusOK {
		t.Fatalf("set labels: %d %s", status, code)
	}
	if l := one.Node.Labels; l["zone"] != "b" || l["gpu"] != "yes" || l["disk"] != "hdd" || len(l) != 3 ||
		len(one.Node.AdminLabels) != 2 {
		t.Fatalf("labels %v, admin %v", l, one.Node.AdminLabels)
	}
	if msg, err := sub.ReceiveMessage(ctx); err != nil || msg.Payload != "node:n1" {
		t.Fatalf("leader not told: %v %v", msg, err)
	}
	var agent, admin string
	e.pool.QueryRow(`SELECT labels_json, admin_labels_json FROM nodes WHERE id = 'n1'`).Scan(&agent, &admin)
	if agent != `{"zone":"a","disk":"hdd"}` || admin != `{"gpu":"yes","zone":"b"}` {
		t.Fatalf("stored: agent %s, admin %s", agent, admin)
	}

	// Removing the admin's zone lets the agent's show again; repeating a
	// patch changes nothing and records nothing.
	rm := map[string]any{"labels": map[string]any{"zone": nil}}
	for range 2 {
		if status, code := e.call(http.MethodPut, "/api/v1/nodes/n1/labels", e.admin.Token, rm, &one); status != http.StatusOK {
			t.Fatalf("remove label: %d %s", status, code)
		}
	}
	if one.Node.Labels["zone"] != "a" || one.Node.Labels["gpu"] != "yes" {
		t.Fatalf("after removal: %v", one.Node.Labels)
	}
	var shown struct {
		Events []NodeEvent `json:"events"`
	}
	e.call(http.MethodGet, "/api/v1/nodes/n1", e.admin.Token, nil, &shown)
	if len(shown.Events) != 2 || shown.Events[0].Message != "labels: zone removed" ||
		shown.Events[1].Message != "labels: gpu=yes, zone=b" || shown.Events[0].Kind != "label" || shown.Events[0].By != e.admin.User {
		t.Fatalf("events %+v", shown.Events)
	}

	for _, tc := range []struct {
		name, node, token string
		body              any
		status            int
	}{
		{"bad key", "n1", e.admin.Token, map[string]any{"labels": map[string]any{"a=b": "x"}}, http.StatusUnprocessableEntity},
		{"bad value", "n1", e.admin.Token, map[string]any{"labels": map[string]any{"zone": "a b"}}, http.StatusUnprocessableEntity},
		{"no labels", "n1", e.admin.Token, map[string]any{"labels": map[string]any{}}, http.StatusUnprocessableEntity},
		{"unknown field", "n1", e.admin.Token, map[string]any{"set": map[string]any{"zone": "c"}}, http.StatusBadRequest},
		{"unknown node", "nope", e.admin.Token, set, http.StatusNotFound},
		{"not an admin", "n1", e.addUser("labeller", "t-labels"), set, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, _ := e.call(http.MethodPut, "/api/v1/nodes/"+tc.node+"/labels", tc.token, tc.body, nil); status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
		})
	}
	e.pool.QueryRow(`SELECT admin_labels_json FROM nodes WHERE id = 'n1'`).Scan(&admin)
	if admin != `{"gpu":"yes"}` {
		t.Fatalf("refused requests changed labels: %s", admin)
	}
}
