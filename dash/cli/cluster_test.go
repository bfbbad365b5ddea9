package cli

import (
	"strings"
	"testing"

	"github.com/dinp/dinp/dash/api"
)

// TestPrintCluster: `dinp cluster` shows the leader, each router's lag,
// each hm's share, the registry's disk and flags outdated members.
func TestPrintCluster(t *testing.T) {
	v, lag, n, p := int64(40), int64(2), 7, 30
	share, disk := 0.75, int64(5<<20)
	var b strings.Builder
	printCluster(&b, api.Cluster{Leader: "srv-1", ServerVersion: "v1.5.0", RoutesVersion: 42,
		Servers:    []api.Member{{ID: "srv-1", Version: "v1.5.0", Leader: true}},
		Routers:    []api.Member{{ID: "rtr", Version: "v1.4.0", Outdated: true, RoutesVersion: &v, Lag: &lag, Routes: &n}},
		HM:         []api.Member{{ID: "hm-1", Version: "v1.5.0", Probing: &p, Share: &share}},
		Registries: []api.Member{{ID: "reg", Version: "v1.5.0", DiskBytes: &disk}}})
	for _, want := range []string{"leader: srv-1", "routes version: 42", "v1.4.0 (outdated)", "routes v40 (7 hosts), lag 2",
		"probes 30 instances (75%)", "disk 5.0 MB"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("lacks %q:\n%s", want, b.String())
		}
	}
}
