package hm

import (
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// An hm on node n1 probes n1's instances at their node-local address (as
// routers on n1 reach them) and other instances at their published
// address; an hm on no node probes published addresses only.
func TestProbesNodeLocalAddress(t *testing.T) {
	onN1, onN2 := newApp(t, 200), newApp(t, 200)
	closed1, closed2 := testenv.ClosedAddr(t), testenv.ClosedAddr(t)
	// Each instance answers on only one of its addresses.
	rt := common.Route{App: "nl", Release: 1, Health: fastHealth(), Backends: []common.Backend{
		{Addr: closed1, LocalAddr: onN1.addr(), Node: "n1", Instance: "i1", Release: 1},
		{Addr: onN2.addr(), LocalAddr: closed2, Node: "n2", Instance: "i2", Release: 1},
	}}
	for _, c := range []struct {
		node         string
		want1, want2 string
		addr1, addr2 string
	}{
		{"n1", common.Healthy, common.Healthy, onN1.addr(), onN2.addr()},
		{"", common.Unhealthy, common.Healthy, closed1, onN2.addr()},
	} {
		t.Run("hm on "+c.node, func(t *testing.T) {
			rdb, prefix := testenv.Redis(t)
			keys := common.NewKeys(prefix)
			putRoute(t, rdb, keys, rt)
			startHMWith(t, prefix, func(cfg *Config) { cfg.NodeID = c.node })
			testenv.WaitFor(t, "both instances judged", 10*time.Second, func() bool {
				h1, ok1 := healthOf(t, rdb, keys, "i1")
				h2, ok2 := healthOf(t, rdb, keys, "i2")
				return ok1 && ok2 && h1.Status == c.want1 && h2.Status == c.want2 && h1.Addr == c.addr1 && h2.Addr == c.addr2
			})
		})
	}
}
