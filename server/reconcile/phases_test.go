package reconcile

import (
	"strings"
	"testing"
	"time"
)

// Each phase of a round on its own; TestCompute covers whole rounds.

func TestPickStops(t *testing.T) {
	mk := func(id string, release, index int, node string, ok bool) *Instance {
		return &Instance{ID: id, Release: release, Index: index, Node: node, State: StateRunning, healthy: ok}
	}
	loads := map[string]float64{"a": 0.5, "b": 0.5}
	for _, tc := range []struct {
		name string
		list []*Instance
		k    int
		want string
	}{
		{"not serving first", []*Instance{mk("x", 1, 0, "a", true), mk("y", 1, 1, "a", false)}, 1, "y"},
		{"then the older release", []*Instance{mk("x", 2, 0, "a", true), mk("y", 1, 1, "a", true)}, 1, "y"},
		{"then the most loaded node", []*Instance{mk("x", 1, 0, "a", true), mk("y", 1, 1, "c", true)}, 1, "y"},
		// a and b start even: the first pick frees a, so the second comes from b.
		{"picks even nodes out", []*Instance{mk("a1", 1, 0, "a", true), mk("a2", 1, 1, "a", true),
			mk("b1", 1, 2, "b", true), mk("b2", 1, 3, "b", true)}, 2, "b2,a2"},
		{"then the highest index", []*Instance{mk("x", 1, 0, "a", true), mk("y", 1, 5, "a", true)}, 1, "y"},
		{"k beyond the list", []*Instance{mk("x", 1, 0, "a", true)}, 3, "x"},
		{"nothing to pick", []*Instance{mk("x", 1, 0, "a", true)}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := map[string]float64{"a": loads["a"], "b": loads["b"], "c": 0.9}
			got := pickStops(tc.list, tc.k, func(i *Instance) bool { return i.healthy },
				func(n string) float64 { return l[n] }, func(string) int64 { return 1024 },
				func(*Instance) int64 { return 256 })
			var ids []string
			for _, i := range got {
				ids = append(ids, i.ID)
			}
			if s := strings.Join(ids, ","); s != tc.want {
				t.Fatalf("picked %q, want %q", s, tc.want)
			}
		})
	}
}

func TestPhaseLostNodes(t *testing.T) {
	old := node("n1", 1024)
	old.LastSeen = t0.Add(-time.Minute)
	for _, tc := range []struct {
		name      string
		trustFrom time.Time
		lost      bool
	}{
		{"silent past the limit", time.Time{}, true},
		{"store just changed: observation restarts", t0.Add(-time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReconciler(Input{Now: t0, LostAfter: lostAfter, TrustFrom: tc.trustFrom, Nodes: []Node{old, node("n2", 1024)}})
			if r.lost["n1"] != tc.lost || r.lost["n2"] {
				t.Fatalf("lost %v", r.lost)
			}
		})
	}
}

func TestPhaseLiveness(t *testing.T) {
	for _, tc := range []struct {
		name           string
		running, sick  int
		wantSuspended  bool
		wantLivenessOn bool
	}{
		{"a few sick", 12, 3, false, true},
		{"most of a big cluster sick: monitoring failure", 12, 7, true, false},
		{"most of a small cluster sick: one bad app", 4, 4, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &reconciler{in: Input{LivenessLimit: time.Minute}}
			for i := 0; i < tc.running; i++ {
				r.work = append(r.work, &Instance{State: StateRunning, sick: i < tc.sick})
			}
			r.checkLiveness()
			if (r.plan.LivenessSuspended != "") != tc.wantSuspended || (r.liveness > 0) != tc.wantLivenessOn {
				t.Fatalf("suspended %q, liveness %s", r.plan.LivenessSuspended, r.liveness)
			}
		})
	}
}

func TestPhaseRoll(t *testing.T) {
	for _, tc := range []struct {
		name              string
		maxSurge, healthy int
		wantLeft          int
	}{
		{"nothing healthy yet: all old stay", 1, 0, 3},
		{"each healthy new one retires an old one", 1, 2, 1},
		{"all healthy: every old one goes", 1, 3, 0},
		{"no surge: old stay until all are healthy", 0, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := webApp(3, 2, 1, 2)
			r := newReconciler(Input{Now: t0, LostAfter: lostAfter, MaxSurge: tc.maxSurge, Apps: []App{app}, Nodes: []Node{node("n1", 4096)}})
			r.observe()
			r.reserve()
			var old []*Instance
			for i := 0; i < 3; i++ {
				old = append(old, &Instance{ID: "o" + string(rune('0'+i)), AppID: 1, Release: 1, Index: i, Node: "n1", State: StateRunning})
			}
			left := r.roll(&r.apps[0], old, tc.healthy)
			stopped := 0
			for _, inst := range old {
				if inst.State == StateStopping {
					stopped++
				}
			}
			if len(left) != tc.wantLeft || stopped != 3-tc.wantLeft {
				t.Fatalf("left %d, stopped %d; want %d left", len(left), stopped, tc.wantLeft)
			}
		})
	}
}

func TestPhasePlace(t *testing.T) {
	app := webApp(3, 1, 1)
	r := newReconciler(Input{Now: t0, LostAfter: lostAfter, NewID: seqIDs(), Apps: []App{app}, Nodes: []Node{node("n1", 300)}})
	r.observe()
	r.reserve()
	cur, placed := r.place(&r.apps[0], app.Releases[1], nil, 0)
	if placed != 2 || len(cur) != 2 || len(r.created) != 2 {
		t.Fatalf("placed %d of 3 on a 300 MB node (128 MB each): %d created (%s)", placed, len(r.created), r.plan.Unplaced[1])
	}
	if why := r.plan.Unplaced[1]; !strings.Contains(why, "cannot place 1 instance(s) of release v1") {
		t.Fatalf("unplaced reason %q", why)
	}
	if cur[0].Index != 0 || cur[1].Index != 1 || cur[0].State != StatePending {
		t.Fatalf("indexes %d,%d state %s", cur[0].Index, cur[1].Index, cur[0].State)
	}
}

func TestPhaseRoutes(t *testing.T) {
	web := webApp(2, 1, 1)
	web.Domains = []string{"www.example.com", "Shop.Example.com.", "api.apps.io"}
	api := webApp(1, 1, 1)
	api.ID, api.Name, api.Domains = 2, "api", []string{"shop.example.com"}
	noAddr := node("n9", 1024)
	noAddr.Addr = ""
	r := newReconciler(Input{Now: t0, LostAfter: lostAfter, Domain: "apps.io", Apps: []App{web, api}, Nodes: []Node{node("n1", 4096), noAddr}})
	r.work = []*Instance{
		{ID: "w0", AppID: 1, Release: 1, Index: 0, Node: "n1", State: StateRunning, HostPort: 30000, healthy: true},
		{ID: "w1", AppID: 1, Release: 1, Index: 1, Node: "n1", State: StatePending},
		{ID: "a0", AppID: 2, Release: 1, Index: 0, Node: "n9", State: StateRunning, HostPort: 30001},
	}
	for _, inst := range r.work {
		inst.ni = r.nodeIdx[inst.Node]
	}
	r.group()
	r.routes()
	got := map[string]string{}
	for host, rt := range r.plan.Routes {
		var bs []string
		for _, b := range rt.Backends {
			bs = append(bs, b.Instance+"@"+b.Addr)
		}
		got[host] = rt.App + ":" + strings.Join(bs, ",")
	}
	want := map[string]string{
		"web.apps.io":      "web:w0@10.0.0.1:30000", // pending w1 not routed
		"www.example.com":  "web:w0@10.0.0.1:30000",
		"api.apps.io":      "api:", // a platform host wins; a node without address is skipped
		"shop.example.com": "api:", // claimed by both: the first app by name
	}
	if len(got) != len(want) {
		t.Fatalf("routes %v", got)
	}
	for h, w := range want {
		if got[h] != w {
			t.Errorf("%s = %q, want %q", h, got[h], w)
		}
	}
}
