package reconcile

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

const lostAfter = 6 * time.Second

func rel(v int) Release {
	return Release{Version: v, Image: fmt.Sprintf("127.0.0.1:5000/web@sha256:%d", v), MemoryMB: 128, CPUShares: 256,
		Env: map[string]string{"V": fmt.Sprint(v)}}
}

func webApp(instances, current int, releases ...int) App {
	a := App{ID: 1, Name: "web", Instances: instances, CurrentRelease: current, Releases: map[int]Release{},
		Health: common.HealthConfig{Path: "/healthz"}}
	for _, v := range releases {
		a.Releases[v] = rel(v)
	}
	return a
}

func node(id string, memMB int64, containers ...common.Container) Node {
	return Node{ID: id, Addr: "10.0.0." + id[len(id)-1:], Capacity: common.Capacity{MemoryMB: memMB, CPUs: 2},
		LastSeen: t0, Heartbeat: &common.Heartbeat{Node: id, Containers: containers}}
}

func running(inst string, port int) common.Container {
	return common.Container{ID: "c-" + inst, Instance: inst, State: common.StateRunning, HostPort: port}
}

func inst(id string, release, index int, node string, state common.InstanceState) Instance {
	i := Instance{ID: id, AppID: 1, Release: release, Index: index, Node: node, State: state,
		CreatedAt: t0.Add(-time.Minute), UpdatedAt: t0.Add(-time.Minute)}
	if state == StateRunning {
		i.HostPort = 30000 + index
		i.ContainerID = "c-" + id
	}
	return i
}

func port(i Instance, p int) Instance { i.HostPort = p; return i }

func healthy(ids ...string) map[string]common.HealthStatus {
	m := map[string]common.HealthStatus{}
	for _, id := range ids {
		m[id] = common.HealthStatus{Instance: id, Status: common.Healthy}
	}
	return m
}

func unhealthy(id string, since time.Time) map[string]common.HealthStatus {
	return map[string]common.HealthStatus{id: {Instance: id, Status: common.Unhealthy, Since: since, Error: "connection refused"}}
}

func merge(ms ...map[string]common.HealthStatus) map[string]common.HealthStatus {
	out := map[string]common.HealthStatus{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func kinds(p Plan) string {
	var s []string
	for _, e := range p.Events {
		s = append(s, e.Kind)
	}
	return strings.Join(s, ",")
}

func seqIDs() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("new%d", n) }
}

func ids(list []Instance) string {
	var s []string
	for _, i := range list {
		s = append(s, i.ID+"@"+i.Node+":"+string(i.State))
	}
	return strings.Join(s, ",")
}

func assigned(p Plan, node string) string {
	var s []string
	for _, a := range p.Assignments[node] {
		s = append(s, a.Instance)
	}
	return strings.Join(s, ",")
}

func backends(p Plan, host string) string {
	r, ok := p.Routes[host]
	if !ok {
		return "<no route>"
	}
	var s []string
	for _, b := range r.Backends {
		s = append(s, fmt.Sprintf("%s=%s/%v", b.Instance, b.Addr, b.Healthy))
	}
	return strings.Join(s, ",")
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name  string
		in    Input
		check func(t *testing.T, p Plan)
	}{
		{
			name: "new app is spread across nodes",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Nodes: []Node{node("n1", 1024), node("n2", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending,new2@n2:pending")
				eq(t, "n1", assigned(p, "n1"), "new1")
				eq(t, "n2", assigned(p, "n2"), "new2")
				a := p.Assignments["n1"][0]
				if a.Image != rel(1).Image || a.MemoryMB != 128 || a.Port != 8080 || a.Env["V"] != "1" || a.App != "web" {
					t.Fatalf("assignment %+v", a)
				}
				if p.Create[0].Index+p.Create[1].Index != 1 {
					t.Fatalf("indexes %d %d", p.Create[0].Index, p.Create[1].Index)
				}
				eq(t, "route", backends(p, "web.apps.io"), "")
			},
		},
		{
			name: "pending instances from the previous round count as placed",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StatePending), inst("b", 1, 1, "n2", StatePending)},
				Nodes:     []Node{node("n1", 1024), node("n2", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "update", ids(p.Update), "")
				eq(t, "n1", assigned(p, "n1"), "a")
			},
		},
		{
			name: "pending reservations count against memory",
			in: Input{Apps: []App{webApp(3, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StatePending)},
				Nodes:     []Node{node("n1", 256), node("n2", 128)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n2:pending,new2@n1:pending")
			},
		},
		{
			name: "a failed create marks that instance failed and touches nothing else",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n2", StatePending)},
				Nodes: []Node{node("n1", 1024, running("a", 30000)),
					node("n2", 1024, common.Container{Instance: "b", Error: "pull: manifest unknown"})},
				Health: healthy("a")},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "delete", ids(p.Delete), "")
				eq(t, "update", ids(p.Update), "b@n2:failed")
				eq(t, "error", p.Update[0].Error, "pull: manifest unknown")
				eq(t, "n2", assigned(p, "n2"), "b")
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:30000/true")
			},
		},
		{
			name: "exited container is failed with its exit code and leaves the route",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning)},
				Nodes: []Node{node("n1", 1024, common.Container{ID: "c-a", Instance: "a", State: common.StateExited,
					ExitCode: 2, RestartCount: 3})}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:failed")
				eq(t, "error", p.Update[0].Error, "exited with code 2")
				if p.Update[0].Restarts != 3 || !p.Update[0].UpdatedAt.Equal(t0) {
					t.Fatalf("row %+v", p.Update[0])
				}
				eq(t, "route", backends(p, "web.apps.io"), "")
				eq(t, "create", ids(p.Create), "")
			},
		},
		{
			name: "heartbeat reports running: row updated, routed with health",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StatePending), inst("b", 1, 1, "n2", StatePending)},
				Nodes: []Node{node("n1", 1024, running("a", 31000)),
					node("n2", 1024, running("b", 32000))},
				Health: healthy("a")},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:running,b@n2:running")
				if p.Update[0].HostPort != 31000 || p.Update[0].ContainerID != "c-a" {
					t.Fatalf("row %+v", p.Update[0])
				}
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:31000/true,b=10.0.0.2:32000/false")
				r := p.Routes["web.apps.io"]
				if r.App != "web" || r.Release != 1 || r.Health.Path != "/healthz" {
					t.Fatalf("route %+v", r)
				}
			},
		},
		{
			name: "empty desired set after a successful read changes nothing",
			in:   Input{Nodes: []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "all", ids(p.Create)+ids(p.Update)+ids(p.Delete), "")
				if len(p.Routes) != 0 || len(p.Events) != 0 {
					t.Fatalf("routes %v events %v", p.Routes, p.Events)
				}
				if l, ok := p.Assignments["n1"]; !ok || l == nil || len(l) != 0 {
					t.Fatalf("n1 must have an empty, non-nil list: %#v", l)
				}
			},
		},
		{
			name: "last app deleted: its instances stop and its route goes",
			in: Input{Instances: []Instance{inst("a", 1, 0, "n1", StateRunning)},
				Nodes: []Node{node("n1", 1024, running("a", 30000))}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:stopping")
				if len(p.Routes) != 0 {
					t.Fatalf("routes %v", p.Routes)
				}
			},
		},
		{
			name: "instances = 0 stops everything and drops the route",
			in: Input{Apps: []App{webApp(0, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n1", StateFailed)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000), common.Container{Instance: "b", State: common.StateExited})}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:stopping,b@n1:stopping")
				eq(t, "route", backends(p, "web.apps.io"), "<no route>")
				eq(t, "n1", assigned(p, "n1"), "a,b") // assigned until drained
			},
		},
		{
			name: "stopping instance is deleted after the drain period only",
			in: Input{Apps: []App{webApp(0, 1, 1)},
				Instances: []Instance{
					func() Instance {
						i := inst("old", 1, 0, "n1", StateStopping)
						i.UpdatedAt = t0.Add(-10 * time.Second)
						return i
					}(),
					func() Instance {
						i := inst("young", 1, 1, "n1", StateStopping)
						i.UpdatedAt = t0.Add(-time.Second)
						return i
					}(),
				},
				Nodes: []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "delete", ids(p.Delete), "old@n1:stopping")
				eq(t, "update", ids(p.Update), "")
				eq(t, "n1", assigned(p, "n1"), "young")
			},
		},
		{
			name: "lost node: its instances are deleted and replaced elsewhere",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n2", StateRunning)},
				Nodes: []Node{node("n1", 1024, running("a", 30000)),
					func() Node { n := node("n2", 1024); n.Heartbeat = nil; n.LastSeen = t0.Add(-lostAfter); return n }()}},
			check: func(t *testing.T, p Plan) {
				eq(t, "delete", ids(p.Delete), "b@n2:running")
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "index", fmt.Sprint(p.Create[0].Index), "1")
				eq(t, "lost", strings.Join(p.Lost, ","), "n2")
				eq(t, "n2", assigned(p, "n2"), "")
				if _, ok := p.Assignments["n2"]; !ok {
					t.Fatal("lost node must keep an (empty) assignment list")
				}
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:30000/false")
			},
		},
		{
			name: "silent node not yet lost keeps its instances and gets nothing new",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n2", StateRunning)},
				Nodes: []Node{node("n1", 1024),
					func() Node {
						n := node("n2", 4096)
						n.Heartbeat = nil
						n.LastSeen = t0.Add(-lostAfter + time.Second)
						return n
					}()}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "")
				eq(t, "delete", ids(p.Delete), "")
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "n2", assigned(p, "n2"), "a")
			},
		},
		{
			name: "node that comes back after being lost gets an empty list, then new work",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("r", 1, 1, "n1", StateRunning)},
				// n2 still runs "b", which was replaced by "r" while it was away.
				Nodes: []Node{node("n1", 1024, running("a", 30000), running("r", 30001)),
					node("n2", 1024, running("b", 30000))}},
			check: func(t *testing.T, p Plan) {
				eq(t, "all", ids(p.Create)+ids(p.Update)+ids(p.Delete), "")
				eq(t, "n2", assigned(p, "n2"), "")
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:30000/false,r=10.0.0.1:30001/false")
			},
		},
		{
			name: "instance on a node nobody knows is lost",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "ghost", StateRunning)},
				Nodes:     []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "delete", ids(p.Delete), "a@ghost:running")
				eq(t, "create", ids(p.Create), "new1@n1:pending")
			},
		},
		{
			name: "no capacity: a reason, nothing placed",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Nodes: []Node{node("n1", 100), node("n2", 64)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "reason", p.Unplaced[1], "cannot place 1 instance(s) of release v1: need 128 MB, largest free 100 MB")
			},
		},
		{
			name: "memory reserve is honoured",
			in: Input{Apps: []App{webApp(1, 1, 1)}, ReserveMB: 900,
				Nodes: []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "reason", p.Unplaced[1], "cannot place 1 instance(s) of release v1: need 128 MB, largest free 124 MB")
			},
		},
		{
			name: "partial capacity places what fits and reports the rest",
			in: Input{Apps: []App{webApp(3, 1, 1)},
				Nodes: []Node{node("n1", 300)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending,new2@n1:pending")
				eq(t, "reason", p.Unplaced[1], "cannot place 1 instance(s) of release v1: need 128 MB, largest free 44 MB")
			},
		},
		{
			name: "drained node gets nothing new; its instance is replaced elsewhere first",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n2", StateRunning)},
				Nodes: []Node{node("n1", 1024),
					func() Node { n := node("n2", 8192, running("a", 30000)); n.Drain = true; return n }()},
				Health: healthy("a")},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending,new2@n1:pending")
				eq(t, "update", ids(p.Update), "")
				eq(t, "n2", assigned(p, "n2"), "a")
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.2:30000/true")
				eq(t, "events", kinds(p), EventReplace)
			},
		},
		{
			name: "drained node's instance stops once its replacements serve",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n2", StateRunning), port(inst("b", 1, 0, "n1", StateRunning), 30005)},
				Nodes: []Node{node("n1", 1024, running("b", 30005)),
					func() Node { n := node("n2", 8192, running("a", 30000)); n.Drain = true; return n }()},
				Health: healthy("a", "b")},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "update", ids(p.Update), "a@n2:stopping")
				eq(t, "route", backends(p, "web.apps.io"), "b=10.0.0.1:30005/true")
				eq(t, "events", kinds(p), EventReplace)
			},
		},
		{
			name: "instance unhealthy beyond the liveness limit gets a replacement first",
			in: Input{Apps: []App{webApp(1, 1, 1)}, LivenessLimit: time.Minute,
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000))},
				Health:    unhealthy("a", t0.Add(-61*time.Second))},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "index", fmt.Sprint(p.Create[0].Index), "0")
				eq(t, "update", ids(p.Update), "")
				eq(t, "n1", assigned(p, "n1"), "a,new1")
				eq(t, "events", kinds(p), EventReplace)
				if !strings.Contains(p.Events[0].Message, "connection refused") {
					t.Fatalf("event %q lacks the last error", p.Events[0].Message)
				}
			},
		},
		{
			name: "unhealthy instance stops when its replacement is healthy",
			in: Input{Apps: []App{webApp(1, 1, 1)}, LivenessLimit: time.Minute,
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), port(inst("b", 1, 0, "n1", StateRunning), 30005)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000), running("b", 30005))},
				Health:    merge(unhealthy("a", t0.Add(-2*time.Minute)), healthy("b"))},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "update", ids(p.Update), "a@n1:stopping")
			},
		},
		{
			name: "unhealthy within the liveness limit, or limit off: nothing replaced",
			in: Input{Apps: []App{webApp(2, 1, 1)}, LivenessLimit: time.Minute,
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n1", StateRunning)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000), running("b", 30001))},
				Health:    merge(unhealthy("a", t0.Add(-59*time.Second)), healthy("b"))},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "update", ids(p.Update), "")
			},
		},
		{
			name: "most of the cluster unhealthy: liveness replacement is suspended",
			in: Input{Apps: []App{webApp(10, 1, 1)}, LivenessLimit: time.Minute,
				Instances: func() []Instance {
					var l []Instance
					for i := range 10 {
						l = append(l, inst(fmt.Sprint("i", i), 1, i, "n1", StateRunning))
					}
					return l
				}(),
				Nodes: []Node{func() Node {
					n := node("n1", 8192)
					for i := range 10 {
						n.Heartbeat.Containers = append(n.Heartbeat.Containers, running(fmt.Sprint("i", i), 30000+i))
					}
					return n
				}()},
				Health: func() map[string]common.HealthStatus {
					m := map[string]common.HealthStatus{}
					for i := range 10 {
						m = merge(m, unhealthy(fmt.Sprint("i", i), t0.Add(-time.Hour)))
					}
					return m
				}()},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "")
				eq(t, "update", ids(p.Update), "")
				eq(t, "suspended", p.LivenessSuspended, "10 of 10 running instances unhealthy")
			},
		},
		{
			name: "a broken app's replacements never pile up",
			in: Input{Apps: []App{webApp(1, 1, 1)}, LivenessLimit: time.Minute,
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), port(inst("b", 1, 0, "n1", StateRunning), 30005)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000), running("b", 30005))},
				Health:    merge(unhealthy("a", t0.Add(-3*time.Minute)), unhealthy("b", t0.Add(-2*time.Minute)))},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "update", ids(p.Update), "a@n1:stopping")
			},
		},
		{
			name: "a failed pull is an event once per reason",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StatePending)},
				Nodes:     []Node{node("n1", 1024, common.Container{Instance: "a", State: "pending", Error: "pull: manifest unknown"})}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:failed")
				eq(t, "error", p.Update[0].Error, "pull: manifest unknown")
				eq(t, "events", kinds(p), EventFailed)
			},
		},
		{
			name: "the same failure again is not a new event",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{func() Instance {
					i := inst("a", 1, 0, "n1", StateFailed)
					i.Error = "pull: manifest unknown"
					return i
				}()},
				Nodes: []Node{node("n1", 1024, common.Container{Instance: "a", State: "pending", Error: "pull: manifest unknown"})}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "")
				eq(t, "events", kinds(p), "")
			},
		},
		{
			name: "surge 1: one new instance at a time beside the old release",
			in: Input{Apps: []App{webApp(3, 2, 1, 2)}, MaxSurge: 1,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n1", StateRunning), inst("o3", 1, 2, "n1", StateRunning)},
				Nodes:     []Node{node("n1", 4096, running("o1", 30000), running("o2", 30001), running("o3", 30002))},
				Health:    healthy("o1", "o2", "o3")},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "update", ids(p.Update), "")
			},
		},
		{
			name: "surge 1: a healthy new instance retires one old and makes room for the next",
			in: Input{Apps: []App{webApp(3, 2, 1, 2)}, MaxSurge: 1,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n1", StateRunning),
					inst("o3", 1, 2, "n1", StateRunning), port(inst("v1", 2, 0, "n1", StateRunning), 30010)},
				Nodes:  []Node{node("n1", 4096, running("o1", 30000), running("o2", 30001), running("o3", 30002), running("v1", 30010))},
				Health: healthy("o1", "o2", "o3", "v1")},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "o3@n1:stopping")
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "index", fmt.Sprint(p.Create[0].Index), "1")
			},
		},
		{
			name: "surge 1: a new instance late to turn healthy rolls back although others are fine",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)}, MaxSurge: 1, StartTimeout: 30 * time.Second,
				Instances: []Instance{inst("o2", 1, 1, "n1", StateRunning), port(inst("v1", 2, 0, "n1", StateRunning), 30010),
					func() Instance {
						i := port(inst("v2", 2, 1, "n1", StateRunning), 30011)
						i.CreatedAt = t0.Add(-31 * time.Second)
						return i
					}()},
				Nodes:  []Node{node("n1", 4096, running("o2", 30001), running("v1", 30010), running("v2", 30011))},
				Health: healthy("o2", "v1")},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 1 || p.Rollbacks[0].To != 1 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
				eq(t, "update", ids(p.Update), "") // o2 keeps serving
			},
		},
		{
			name: "scale down: unhealthy, then old releases, then the most loaded node",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n2", StateRunning),
					inst("c", 1, 2, "n2", StateRunning), inst("d", 1, 3, "n1", StateRunning), inst("e", 1, 4, "n1", StateRunning)},
				Nodes: []Node{node("n1", 1024, running("a", 30000), running("d", 30003), running("e", 30004)),
					node("n2", 1024, running("b", 30001), running("c", 30002))},
				Health: healthy("a", "b", "c", "d")},
			check: func(t *testing.T, p Plan) {
				// e is unhealthy; then n1 and n2 hold two each: highest index (d);
				// then n2 is the most loaded: c. One instance per node remains.
				eq(t, "update", ids(p.Update), "c@n2:stopping,d@n1:stopping,e@n1:stopping")
			},
		},
		{
			name: "constraints restrict placement",
			in: Input{Apps: []App{func() App { a := webApp(2, 1, 1); a.Constraints = map[string]string{"zone": "b"}; return a }()},
				Nodes: []Node{node("n1", 1024), func() Node { n := node("n2", 1024); n.Labels = map[string]string{"zone": "b"}; return n }()}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n2:pending,new2@n2:pending")
			},
		},
		{
			name: "rolling deploy starts new instances and keeps old ones routed",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)},
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n2", StateRunning)},
				Nodes:     []Node{node("n1", 1024, running("o1", 30000)), node("n2", 1024, running("o2", 30001))},
				Health:    healthy("o1", "o2")},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending,new2@n2:pending")
				eq(t, "update", ids(p.Update), "")
				eq(t, "route", backends(p, "web.apps.io"), "o1=10.0.0.1:30000/true,o2=10.0.0.2:30001/true")
				eq(t, "release", fmt.Sprint(p.Routes["web.apps.io"].Release), "2")
				eq(t, "n1", assigned(p, "n1"), "o1,new1")
				eq(t, "image", p.Assignments["n1"][1].Image, rel(2).Image)
			},
		},
		{
			name: "rolling deploy keeps old while new are running but not all healthy",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)},
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n2", StateRunning),
					port(inst("v1", 2, 0, "n1", StateRunning), 30002), port(inst("v2", 2, 1, "n2", StateRunning), 30003)},
				Nodes: []Node{node("n1", 1024, running("o1", 30000), running("v1", 30002)),
					node("n2", 1024, running("o2", 30001), running("v2", 30003))},
				Health: healthy("o1", "o2", "v1")},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "")
				eq(t, "route", backends(p, "web.apps.io"),
					"o1=10.0.0.1:30000/true,o2=10.0.0.2:30001/true,v1=10.0.0.1:30002/true,v2=10.0.0.2:30003/false")
			},
		},
		{
			name: "rolling deploy stops old once every new instance is healthy",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)},
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n2", StateRunning),
					port(inst("v1", 2, 0, "n1", StateRunning), 30002), port(inst("v2", 2, 1, "n2", StateRunning), 30003)},
				Nodes: []Node{node("n1", 1024, running("o1", 30000), running("v1", 30002)),
					node("n2", 1024, running("o2", 30001), running("v2", 30003))},
				Health: healthy("o1", "o2", "v1", "v2")},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "o1@n1:stopping,o2@n2:stopping")
				eq(t, "route", backends(p, "web.apps.io"), "v1=10.0.0.1:30002/true,v2=10.0.0.2:30003/true")
				eq(t, "n1", assigned(p, "n1"), "o1,v1") // still assigned while draining
				if len(p.Events) != 1 || p.Events[0].Kind != EventDeploy {
					t.Fatalf("events %+v", p.Events)
				}
			},
		},
		{
			name: "deploy not healthy within the start timeout is rolled back",
			in: Input{Apps: []App{webApp(1, 2, 1, 2)}, StartTimeout: 30 * time.Second,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance {
						i := inst("v1", 2, 0, "n1", StateFailed)
						i.CreatedAt = t0.Add(-31 * time.Second)
						return i
					}()},
				Nodes:  []Node{node("n1", 1024, running("o1", 30000), common.Container{Instance: "v1", State: common.StateExited, ExitCode: 1})},
				Health: healthy("o1")},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 1 || p.Rollbacks[0].From != 2 || p.Rollbacks[0].To != 1 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
				eq(t, "reason", p.Rollbacks[0].Reason, "release v2 not healthy after 30s (0/1 healthy); rolling back to v1")
				eq(t, "route", backends(p, "web.apps.io"), "o1=10.0.0.1:30000/true")
			},
		},
		{
			name: "deploy still within the start timeout is not rolled back",
			in: Input{Apps: []App{webApp(1, 2, 1, 2)}, StartTimeout: 30 * time.Second,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance {
						i := inst("v1", 2, 0, "n1", StatePending)
						i.CreatedAt = t0.Add(-29 * time.Second)
						return i
					}()},
				Nodes:  []Node{node("n1", 1024, running("o1", 30000))},
				Health: healthy("o1")},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 0 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
			},
		},
		{
			name: "every new instance crashed 3 times: rolled back at once, not at the start timeout",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)}, StartTimeout: time.Hour,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance { i := inst("v1", 2, 0, "n1", StateFailed); i.Restarts = 3; return i }(),
					func() Instance { i := inst("v2", 2, 1, "n1", StateFailed); i.Restarts = 4; return i }()},
				Nodes: []Node{node("n1", 1024, running("o1", 30000),
					common.Container{Instance: "v1", State: common.StateExited, RestartCount: 3,
						LastExit: &common.Exit{Code: 1, RuntimeMS: 200, At: t0}},
					common.Container{Instance: "v2", State: common.StateExited, RestartCount: 4,
						LastExit: &common.Exit{Code: 1, RuntimeMS: 300, At: t0}})},
				Health: healthy("o1")},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 1 || p.Rollbacks[0].From != 2 || p.Rollbacks[0].To != 1 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
				eq(t, "reason", p.Rollbacks[0].Reason, "release v2 cannot become healthy: every new instance failed "+
					"(instance v1 crashed 3 times, last exited with code 1 after 0.2 s); rolling back to v1")
				eq(t, "last exit", p.Update[0].LastExit+" "+p.Update[0].LastExitAt.Format(time.RFC3339), "exited with code 1 after 0.2 s "+t0.Format(time.RFC3339))
			},
		},
		{
			name: "one new instance still starting: no fail-fast rollback",
			in: Input{Apps: []App{webApp(2, 2, 1, 2)}, StartTimeout: time.Hour,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance { i := inst("v1", 2, 0, "n1", StateFailed); i.Restarts = 3; return i }(),
					port(inst("v2", 2, 1, "n1", StateRunning), 30002)},
				Nodes: []Node{node("n1", 1024, running("o1", 30000),
					common.Container{Instance: "v1", State: common.StateExited, RestartCount: 3}, running("v2", 30002))},
				Health: healthy("o1")},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 0 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
			},
		},
		{
			name: "every new instance unhealthy past the grace period: rolled back",
			in: Input{Apps: []App{webApp(1, 2, 1, 2)}, StartTimeout: time.Hour,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance {
						i := port(inst("v1", 2, 0, "n1", StateRunning), 30002)
						i.CreatedAt = t0.Add(-31 * time.Second)
						return i
					}()},
				Nodes: []Node{node("n1", 1024, running("o1", 30000), running("v1", 30002))},
				Health: merge(healthy("o1"), map[string]common.HealthStatus{"v1": {Status: common.Unhealthy,
					Since: t0.Add(-5 * time.Second), Error: "GET /healthz: status 500"}})},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 1 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
				eq(t, "reason", p.Rollbacks[0].Reason, "release v2 cannot become healthy: every new instance failed "+
					"(instance v1 failed its health check past the 30s grace period: GET /healthz: status 500); rolling back to v1")
			},
		},
		{
			name: "unhealthy within the grace period: no rollback",
			in: Input{Apps: []App{webApp(1, 2, 1, 2)}, StartTimeout: time.Hour,
				Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning),
					func() Instance {
						i := port(inst("v1", 2, 0, "n1", StateRunning), 30002)
						i.CreatedAt = t0.Add(-29 * time.Second)
						return i
					}()},
				Nodes:  []Node{node("n1", 1024, running("o1", 30000), running("v1", 30002))},
				Health: merge(healthy("o1"), unhealthy("v1", t0.Add(-5*time.Second)))},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 0 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
			},
		},
		{
			name: "first deploy has nothing to roll back to",
			in: Input{Apps: []App{webApp(1, 1, 1)}, StartTimeout: 30 * time.Second,
				Instances: []Instance{func() Instance { i := inst("v1", 1, 0, "n1", StatePending); i.CreatedAt = t0.Add(-time.Hour); return i }()},
				Nodes:     []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				if len(p.Rollbacks) != 0 {
					t.Fatalf("rollbacks %+v", p.Rollbacks)
				}
			},
		},
		{
			name: "scale down removes unhealthy first, then the highest index",
			in: Input{Apps: []App{webApp(2, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n1", StateRunning),
					inst("c", 1, 2, "n1", StateRunning), inst("d", 1, 3, "n1", StateRunning)},
				Nodes:  []Node{node("n1", 1024, running("a", 30000), running("b", 30001), running("c", 30002), running("d", 30003))},
				Health: healthy("a", "c", "d")},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "b@n1:stopping,d@n1:stopping")
				eq(t, "create", ids(p.Create), "")
				eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:30000/true,c=10.0.0.1:30002/true")
			},
		},
		{
			name: "scale up fills the lowest free index",
			in: Input{Apps: []App{webApp(3, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StatePending), inst("c", 1, 2, "n1", StatePending)},
				Nodes:     []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "create", ids(p.Create), "new1@n1:pending")
				eq(t, "index", fmt.Sprint(p.Create[0].Index), "1")
			},
		},
		{
			name: "running container that vanished from the heartbeat goes back to pending",
			in: Input{Apps: []App{webApp(1, 1, 1)},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning)},
				Nodes:     []Node{node("n1", 1024)}},
			check: func(t *testing.T, p Plan) {
				eq(t, "update", ids(p.Update), "a@n1:pending")
				eq(t, "create", ids(p.Create), "")
				eq(t, "route", backends(p, "web.apps.io"), "")
			},
		},
		{
			name: "verified custom domains share the app's route, lower-cased",
			in: Input{Apps: []App{func() App {
				a := webApp(1, 1, 1)
				a.Domains = []string{"WWW.Example.COM", "shop.example.org."}
				return a
			}()},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning)},
				Nodes:     []Node{node("n1", 1024, running("a", 30000))}, Health: healthy("a")},
			check: func(t *testing.T, p Plan) {
				eq(t, "hosts", fmt.Sprint(len(p.Routes)), "3")
				for _, h := range []string{"web.apps.io", "www.example.com", "shop.example.org"} {
					eq(t, h, backends(p, h), "a=10.0.0.1:30000/true")
					eq(t, h+" app", p.Routes[h].App, "web")
				}
			},
		},
		{
			name: "no custom domain route for an app with nothing to run",
			in:   Input{Apps: []App{func() App { a := webApp(0, 1, 1); a.Domains = []string{"www.example.com"}; return a }()}},
			check: func(t *testing.T, p Plan) {
				eq(t, "hosts", fmt.Sprint(len(p.Routes)), "0")
			},
		},
		{
			name: "a custom domain never takes over a platform host",
			in: Input{Apps: []App{
				func() App { a := webApp(1, 1, 1); a.Domains = []string{"API.apps.io", "both.example.com"}; return a }(),
				func() App {
					a := webApp(1, 1, 1)
					a.ID, a.Name, a.Domains = 2, "api", []string{"both.example.com"}
					return a
				}()},
				Instances: []Instance{inst("a", 1, 0, "n1", StateRunning),
					func() Instance { i := inst("b", 1, 0, "n1", StateRunning); i.AppID, i.HostPort = 2, 30001; return i }()},
				Nodes: []Node{node("n1", 1024, running("a", 30000), running("b", 30001))}},
			check: func(t *testing.T, p Plan) {
				eq(t, "api host", p.Routes["api.apps.io"].App, "api")
				eq(t, "shared domain goes to the first app by name", p.Routes["both.example.com"].App, "api")
				eq(t, "hosts", fmt.Sprint(len(p.Routes)), "3")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Now = t0
			in.Domain = "apps.io"
			in.LostAfter = lostAfter
			in.DrainPeriod = 5 * time.Second
			in.NewID = seqIDs()
			tt.check(t, Compute(in))
		})
	}
}

// Compute is deterministic: the same input gives the same plan.
func TestComputeDeterministic(t *testing.T) {
	in := Input{Now: t0, Domain: "apps.io", LostAfter: lostAfter,
		Apps:  []App{webApp(5, 1, 1), func() App { a := webApp(3, 1, 1); a.ID, a.Name = 2, "api"; return a }()},
		Nodes: []Node{node("n3", 2048), node("n1", 1024), node("n2", 4096)}}
	var first string
	for i := 0; i < 20; i++ {
		in.NewID = seqIDs()
		got := fmt.Sprintf("%v", Compute(in))
		if i == 0 {
			first = got
		} else if got != first {
			t.Fatalf("round %d differs", i)
		}
	}
}

func eq(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// The order rows arrive in does not change the plan (Compute does not sort
// them; every decision is order-independent and its lists are sorted).
func TestComputeIgnoresRowOrder(t *testing.T) {
	lost := node("n9", 4096)
	lost.LastSeen = t0.Add(-time.Hour)
	base := Input{Now: t0, Domain: "apps.io", LostAfter: lostAfter, DrainPeriod: time.Second, MaxSurge: 1,
		Apps: []App{webApp(3, 2, 1, 2), func() App { a := webApp(2, 1, 1); a.ID, a.Name = 2, "api"; return a }()},
		Instances: []Instance{inst("o1", 1, 0, "n1", StateRunning), inst("o2", 1, 1, "n2", StateRunning),
			inst("o3", 1, 2, "n9", StateRunning), port(inst("v1", 2, 0, "n2", StateRunning), 30010),
			func() Instance { i := inst("a1", 1, 0, "n1", StateRunning); i.AppID = 2; return i }(),
			func() Instance { i := inst("a2", 1, 1, "n1", StateRunning); i.AppID = 2; return i }(),
			func() Instance { i := inst("a3", 1, 2, "n2", StateRunning); i.AppID = 2; return i }()},
		Nodes: []Node{node("n1", 4096, running("o1", 30000), running("a1", 30000), running("a2", 30001)),
			node("n2", 4096, running("o2", 30001), running("v1", 30010), running("a3", 30002)), lost},
		Health: healthy("o1", "o2", "v1", "a1", "a2")}
	var first string
	for i := 0; i < 20; i++ {
		in := base
		in.Instances = append([]Instance(nil), base.Instances...)
		rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(in.Instances), func(a, b int) {
			in.Instances[a], in.Instances[b] = in.Instances[b], in.Instances[a]
		})
		in.NewID = seqIDs()
		p := Compute(in)
		got := fmt.Sprint(ids(p.Create), ids(p.Update), ids(p.Delete), p.Assignments, p.Routes, p.Lost, p.Rollbacks, len(p.Events))
		if i == 0 {
			first = got
			continue
		}
		if got != first {
			t.Fatalf("order %d:\n%s\nwant\n%s", i, got, first)
		}
	}
}

// Compute builds every node's assignment list and every route's backends in
// their documented order without sorting them (apps by name, rows by
// release, index, id): check that order on a shuffled mid-size cluster in
// the middle of a deploy.
func TestComputeOutputOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	in := Input{Now: t0, Domain: "apps.io", LostAfter: lostAfter, DrainPeriod: time.Minute, NewID: seqIDs()}
	for n := range 6 {
		in.Nodes = append(in.Nodes, Node{ID: fmt.Sprintf("n%d", n), Addr: fmt.Sprintf("10.0.0.%d", n),
			Capacity: common.Capacity{MemoryMB: 8192}, LastSeen: t0, Heartbeat: &common.Heartbeat{}})
	}
	for a := range 20 {
		app := webApp(4, 2, 1, 2)
		app.ID, app.Name = int64(a+1), fmt.Sprintf("app-%02d", 19-a)
		in.Apps = append(in.Apps, app)
		for i := range 6 {
			node := &in.Nodes[rng.IntN(len(in.Nodes))]
			r := inst(fmt.Sprintf("i%02d-%d", a, i), 1+i%2, rng.IntN(4), node.ID, StateRunning)
			r.AppID, r.HostPort = app.ID, 30000+a*10+i
			in.Instances = append(in.Instances, r)
			node.Heartbeat.Containers = append(node.Heartbeat.Containers, running(r.ID, r.HostPort))
		}
	}
	rng.Shuffle(len(in.Instances), func(a, b int) { in.Instances[a], in.Instances[b] = in.Instances[b], in.Instances[a] })
	p := Compute(in)
	total := 0
	for node, list := range p.Assignments {
		total += len(list)
		for i := 1; i < len(list); i++ {
			x, y := list[i-1], list[i]
			if x.App > y.App || x.App == y.App && (x.Release > y.Release || x.Release == y.Release &&
				(x.Index > y.Index || x.Index == y.Index && x.Instance >= y.Instance)) {
				t.Fatalf("%s: %+v before %+v", node, x, y)
			}
		}
	}
	if total != len(in.Instances)+len(p.Create) {
		t.Fatalf("assigned %d, want %d", total, len(in.Instances)+len(p.Create))
	}
	for host, r := range p.Routes {
		if len(r.Backends) == 0 {
			t.Fatalf("%s: no backend", host)
		}
		for i := 1; i < len(r.Backends); i++ {
			x, y := r.Backends[i-1], r.Backends[i]
			if x.Release > y.Release || x.Release == y.Release && (x.Index > y.Index || x.Index == y.Index && x.Instance >= y.Instance) {
				t.Fatalf("%s: %+v before %+v", host, x, y)
			}
		}
	}
}

// TestComputeAfterStoreEpochChange: Redis came back empty a second ago —
// actual state has no node at all (no heartbeat, no node set, no health;
// the nodes are known only from MySQL's nodes table) — and the nodes were
// last seen beating a minute earlier, before the outage. The plan must destroy, replace and reroute nothing; the same
// input without the store epoch's TrustFrom loses every node, which is the
// outage this guards against.
func TestComputeAfterStoreEpochChange(t *testing.T) {
	silent := func(id string) Node {
		n := node(id, 1024)
		n.Heartbeat = nil
		n.LastSeen = t0.Add(-time.Minute)
		return n
	}
	input := func(trustFrom time.Time) Input {
		return Input{Now: t0, Apps: []App{webApp(3, 1, 1)}, Domain: "apps.io", LostAfter: lostAfter,
			DrainPeriod: time.Second, StartTimeout: time.Minute, LivenessLimit: time.Minute, NewID: seqIDs(),
			Instances: []Instance{inst("a", 1, 0, "n1", StateRunning), inst("b", 1, 1, "n2", StateRunning),
				inst("c", 1, 2, "n3", StateRunning)},
			Nodes:     []Node{silent("n1"), silent("n2"), silent("n3")},
			Health:    map[string]common.HealthStatus{},
			TrustFrom: trustFrom,
		}
	}
	for _, since := range []time.Duration{time.Second, lostAfter - time.Millisecond} {
		p := Compute(input(t0.Add(-since)))
		eq(t, "delete", ids(p.Delete), "")
		eq(t, "create", ids(p.Create), "")
		eq(t, "update", ids(p.Update), "")
		eq(t, "lost", strings.Join(p.Lost, ","), "")
		eq(t, "rollbacks", fmt.Sprint(len(p.Rollbacks)), "0")
		eq(t, "route", backends(p, "web.apps.io"), "a=10.0.0.1:30000/false,b=10.0.0.2:30001/false,c=10.0.0.3:30002/false")
		for _, n := range []string{"n1", "n2", "n3"} {
			if len(p.Assignments[n]) != 1 {
				t.Fatalf("%s lost its assignment %v after %s of grace", n, p.Assignments[n], since)
			}
		}
	}
	// Fresh observation for LostAfter without a beat: now they are lost.
	p := Compute(input(t0.Add(-lostAfter)))
	eq(t, "lost after a full grace period", strings.Join(p.Lost, ","), "n1,n2,n3")
	// No grace at all (the bug): every node lost at once.
	p = Compute(input(time.Time{}))
	eq(t, "lost without grace", strings.Join(p.Lost, ","), "n1,n2,n3")
}

// A heartbeat's node-local address lands in the row (a change is an
// update) and in the route, with the instance's node; an agent that
// reports none (older agents) leaves it empty and readers use the
// published address.
func TestComputeLocalAddr(t *testing.T) {
	withLocal := func(c common.Container, addr string) common.Container { c.LocalAddr = addr; return c }
	a := inst("a", 1, 0, "n1", StateRunning)
	a.HostPort = 31000
	b := inst("b", 1, 1, "n2", StateRunning)
	b.HostPort = 32000
	in := Input{Now: t0, Domain: "apps.io", LostAfter: lostAfter, NewID: seqIDs(),
		Apps:      []App{webApp(2, 1, 1)},
		Instances: []Instance{a, b},
		Nodes: []Node{node("n1", 1024, withLocal(running("a", 31000), "172.20.0.2:8080")),
			node("n2", 1024, running("b", 32000))},
		Health: healthy("a", "b")}
	p := Compute(in)
	eq(t, "update", ids(p.Update), "a@n1:running")
	if p.Update[0].LocalAddr != "172.20.0.2:8080" {
		t.Fatalf("row %+v", p.Update[0])
	}
	got := p.Routes["web.apps.io"].Backends
	want := []common.Backend{
		{Addr: "10.0.0.1:31000", Instance: "a", Index: 0, Release: 1, Healthy: true, LocalAddr: "172.20.0.2:8080", Node: "n1"},
		{Addr: "10.0.0.2:32000", Instance: "b", Index: 1, Release: 1, Healthy: true, Node: "n2"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("backends\n got %+v\nwant %+v", got, want)
	}

	// The container exits: the row loses its addresses with its port.
	in.Instances = []Instance{p.Update[0], b}
	in.Nodes[0].Heartbeat.Containers[0].State = common.StateExited
	p = Compute(in)
	if len(p.Update) != 1 || p.Update[0].LocalAddr != "" || p.Update[0].HostPort != 0 {
		t.Fatalf("update %+v", p.Update)
	}
}
