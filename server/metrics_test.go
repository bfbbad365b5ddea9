package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// TestServerMetrics: /metrics answers only with the cluster token and
// counts what the server did: leadership, rounds, heartbeats by result,
// nodes by state and instances placed.
func TestServerMetrics(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without the token: %s, want 401", resp.Status)
	}
	e.insertApp(t, "metered", 2, 64)
	a := newFakeAgent(url, "n1", "127.0.0.61", 1024)
	a.start(t)
	if st, _, _ := postHeartbeatAs(url, testToken, "-", common.Heartbeat{Node: "n2", Addr: "127.0.0.62", Capacity: common.Capacity{MemoryMB: 512, CPUs: 1}}); st != http.StatusForbidden {
		t.Fatalf("heartbeat without a node secret: %d", st)
	}
	m := func(series string) float64 { return testenv.Metric(t, url+"/metrics", testToken, series) }
	waitFor(t, "metrics of a leading server", 15*time.Second, func() (bool, string) {
		got := fmt.Sprintf("leader=%v rounds=%v beats ok=%v refused=%v ready=%v placed=%v rounds_count=%v",
			m("dinp_server_leader"), m("dinp_server_reconcile_rounds_total"),
			m(`dinp_server_heartbeats_total{result="ok"}`), m(`dinp_server_heartbeats_total{result="refused"}`),
			m(`dinp_server_nodes{state="ready"}`), m("dinp_server_instances_placed_total"),
			m("dinp_server_reconcile_duration_seconds_count"))
		return m("dinp_server_leader") == 1 && m("dinp_server_reconcile_rounds_total") >= 1 &&
			m("dinp_server_reconcile_duration_seconds_count") >= 1 &&
			m(`dinp_server_heartbeats_total{result="ok"}`) >= 1 && m(`dinp_server_heartbeats_total{result="refused"}`) == 1 &&
			m(`dinp_server_nodes{state="ready"}`) == 1 && m("dinp_server_instances_placed_total") == 2, got
	})
}
