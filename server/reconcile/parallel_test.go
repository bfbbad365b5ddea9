package reconcile

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// TestComputeParallelObserve: a round large enough for observe (and the
// diff, beside routes and assignments) to use several goroutines plans
// exactly what the same round plans on one (rows, events in row order,
// routes, assignments), with rows of every kind:
// running, failed with a new error, pending, stopping, on a lost node, on a
// node without a heartbeat.
func TestComputeParallelObserve(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const nodes, apps, per = 200, 1000, 10 // 10,000 rows: above observeParallelRows
	var in Input
	in.Now, in.Domain, in.LostAfter, in.DrainPeriod = now, "apps.io", 6*time.Second, 10*time.Second
	in.StartTimeout, in.LivenessLimit = time.Minute, time.Minute
	in.Health = map[string]common.HealthStatus{}
	for i := range nodes {
		n := Node{ID: fmt.Sprintf("n%03d", i), Addr: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1),
			Capacity: common.Capacity{MemoryMB: 1 << 20}, LastSeen: now}
		switch {
		case i%50 == 7:
			n.LastSeen = now.Add(-time.Hour) // lost
		case i%50 != 9: // n%50 == 9: no heartbeat stored
			n.Heartbeat = &common.Heartbeat{Node: n.ID, At: now}
		}
		n.Drain = i == 3
		in.Nodes = append(in.Nodes, n)
	}
	for a := range apps {
		in.Apps = append(in.Apps, App{ID: int64(a + 1), Name: fmt.Sprintf("app%04d", a), Instances: per, CurrentRelease: 1,
			Health:   common.HealthConfig{Path: "/"},
			Releases: map[int]Release{1: {Version: 1, Image: "img", MemoryMB: 64}}})
		for k := range per {
			ni := (a*7 + k*13) % nodes
			node := &in.Nodes[ni]
			id := fmt.Sprintf("i%05d", a*per+k)
			row := Instance{ID: id, AppID: int64(a + 1), Release: 1, Index: k, Node: node.ID, State: StateRunning,
				HostPort: 30000 + k, ContainerID: "c" + id, CreatedAt: now.Add(-time.Hour), UpdatedAt: now.Add(-time.Hour),
				StartedAt: now.Add(-time.Hour)}
			c := common.Container{ID: "c" + id, App: in.Apps[a].Name, Instance: id, Release: 1, Index: k,
				State: common.StateRunning, HostPort: row.HostPort, StartedAt: row.StartedAt}
			switch (a + k) % 17 {
			case 1:
				c.State, c.Error = common.StateExited, fmt.Sprintf("pull failed %d", a)
			case 2:
				row.State, row.UpdatedAt = StateStopping, now.Add(-time.Second)
			case 3:
				c.State = ""
			}
			if node.Heartbeat != nil && (a+k)%17 != 4 { // 4: not reported (pending again)
				node.Heartbeat.Containers = append(node.Heartbeat.Containers, c)
			}
			in.Instances = append(in.Instances, row)
			if (a+k)%5 != 0 {
				in.Health[id] = common.HealthStatus{Instance: id, Status: common.Healthy}
			} else {
				in.Health[id] = common.HealthStatus{Instance: id, Status: common.Unhealthy, Since: now.Add(-2 * time.Minute)}
			}
		}
	}
	run := func(procs int) Plan {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		next := 0
		cp := in
		cp.Instances = append([]Instance(nil), in.Instances...)
		cp.Nodes = append([]Node(nil), in.Nodes...)
		cp.NewID = func() string { next++; return fmt.Sprintf("new%06d", next) }
		return Compute(cp)
	}
	one, many := run(1), run(4)
	if len(one.Events) == 0 || len(one.Delete) == 0 || len(one.Update) == 0 || len(one.Create) == 0 {
		t.Fatalf("the round exercises too little: %d events, %d deletes, %d updates, %d creates",
			len(one.Events), len(one.Delete), len(one.Update), len(one.Create))
	}
	failed := 0
	for _, e := range one.Events {
		if e.Kind == EventFailed {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no failed-instance event")
	}
	if !reflect.DeepEqual(one, many) {
		t.Fatalf("plans differ between 1 and 4 workers:\n%d/%d events, %d/%d updates, %d/%d creates",
			len(one.Events), len(many.Events), len(one.Update), len(many.Update), len(one.Create), len(many.Create))
	}
}
