// Package reconcile computes what the leader must change to bring the actual
// state (instance rows, node heartbeats, health) to the desired state (apps
// and their current release). Compute is a pure function: no I/O, no clock,
// no randomness except through Input, so every decision is table-tested and
// applying the Plan is a separate step owned by the server.
package reconcile

import (
	"fmt"
	"sort"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/placement"
)

// Instance states stored in the instances table.
const (
	StatePending  = "pending"  // assigned, not yet reported running
	StateRunning  = "running"  // a heartbeat reports its container running
	StateFailed   = "failed"   // exited, dead or could not start; the agent retries
	StateStopping = "stopping" // out of the route, deleted after the drain period
	StateLost     = "lost"     // its node stopped beating (rows are deleted instead)
)

// Event kinds recorded in the events table.
const (
	EventPlacement = "placement"
	EventLost      = "lost"
	EventDeploy    = "deploy"
	EventScale     = "scale"
	EventRollback  = "rollback"
)

// maxErrorLen bounds error text copied from heartbeats into rows.
const maxErrorLen = 1000

// Release is the part of a release row an instance needs to run.
type Release struct {
	Version   int
	Image     string
	Env       map[string]string
	MemoryMB  int64
	CPUShares int64
}

// App is an app's desired state.
type App struct {
	ID          int64
	Name        string
	Instances   int
	Health      common.HealthConfig
	Constraints map[string]string
	Balance     string
	Sticky      bool
	// CurrentRelease is the version that should run; 0 means none yet.
	CurrentRelease int
	// Releases holds the current release and every release an existing
	// instance of the app runs.
	Releases map[int]Release
}

// Instance is one row of the instances table.
type Instance struct {
	ID          string
	AppID       int64
	Release     int
	Index       int
	Node        string
	State       string
	HostPort    int
	ContainerID string
	Restarts    int
	Error       string
	StartedAt   time.Time // zero: never started
	CreatedAt   time.Time
	// UpdatedAt is when the row last changed; for a stopping instance it is
	// when the drain started.
	UpdatedAt time.Time
}

// Node is a node as the leader knows it this round.
type Node struct {
	ID       string
	Addr     string
	Labels   map[string]string
	Capacity common.Capacity
	Drain    bool
	// LastSeen is when the leader last saw a new heartbeat from the node (or
	// when it became leader, for a node it has not heard from yet).
	LastSeen time.Time
	// Heartbeat is the node's last heartbeat, nil when none is stored (the
	// key expired). Without it the node gets nothing new and its instances
	// keep their state until the node is lost.
	Heartbeat *common.Heartbeat
}

// Input is everything one round decides from.
type Input struct {
	Now       time.Time
	Apps      []App
	Instances []Instance
	// Nodes must include every node an instance refers to; an instance on a
	// node missing here is treated as lost.
	Nodes []Node
	// Health is hm's view, instance id → status (unknown means unhealthy).
	Health map[string]common.HealthStatus
	Domain string
	// LostAfter is how long a node may stay silent before it is lost.
	LostAfter time.Duration
	// DrainPeriod is how long a stopping instance stays assigned after it
	// left the route, so in-flight requests finish.
	DrainPeriod time.Duration
	// ReserveMB is memory of every node kept for the system.
	ReserveMB int64
	// StartTimeout is how long a new release may take to be running and
	// healthy on every wanted instance while an older release still serves;
	// after it the app is rolled back. 0 disables rollbacks.
	StartTimeout time.Duration
	// NewID returns a fresh instance id.
	NewID func() string
}

// Event is a row for the events table.
type Event struct {
	AppID   int64
	Kind    string
	Message string
}

// Plan is what the leader must write.
type Plan struct {
	Create []Instance
	Update []Instance // full rows whose content changed
	Delete []Instance
	Events []Event
	// Unplaced is, per app id, why some wanted instance could not be placed
	// this round. The server records it as an event when it changes, not
	// every round.
	Unplaced map[int64]string
	// Assignments is the complete list of every known node ([] when none).
	Assignments map[string][]common.Assignment
	// Routes is every route that must exist, host → route (Version unset).
	// Any other route host must be deleted.
	Routes map[string]common.Route
	// Lost lists the nodes declared lost this round.
	Lost []string
	// Rollbacks lists apps whose current release must go back to an older
	// one because it did not become healthy in time.
	Rollbacks []Rollback
}

// Rollback moves an app's current release from From back to To. The writer
// must apply it only if the app is still at From (a new deploy wins).
type Rollback struct {
	AppID  int64
	App    string
	From   int
	To     int
	Reason string
}

// Compute returns the plan that moves the actual state toward the desired
// state. Callers must only call it with complete inputs: a failed read must
// skip the round, never look like "no apps".
func Compute(in Input) Plan {
	plan := Plan{
		Unplaced:    map[int64]string{},
		Assignments: map[string][]common.Assignment{},
		Routes:      map[string]common.Route{},
	}
	apps := append([]App(nil), in.Apps...)
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	appByID := map[int64]*App{}
	for i := range apps {
		appByID[apps[i].ID] = &apps[i]
	}
	nodes := map[string]*Node{}
	var nodeIDs []string
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if _, dup := nodes[n.ID]; dup {
			continue
		}
		nodes[n.ID] = n
		nodeIDs = append(nodeIDs, n.ID)
	}
	sort.Strings(nodeIDs)
	lost := map[string]bool{}
	for _, id := range nodeIDs {
		if in.Now.Sub(nodes[id].LastSeen) >= in.LostAfter {
			lost[id] = true
		}
	}

	orig := map[string]Instance{}
	var work []*Instance // rows that survive this round, sorted by id
	instances := append([]Instance(nil), in.Instances...)
	sort.Slice(instances, func(i, j int) bool { return instances[i].ID < instances[j].ID })
	lostSeen := map[string]bool{}
	for _, inst := range instances {
		orig[inst.ID] = inst
		n, known := nodes[inst.Node]
		switch {
		case !known || lost[inst.Node]:
			// The node is gone: forget the row so a replacement is placed; if
			// the node comes back its assignments no longer list the
			// instance and its agent removes the container.
			plan.Delete = append(plan.Delete, inst)
			if known && !lostSeen[inst.Node] {
				lostSeen[inst.Node] = true
				plan.Lost = append(plan.Lost, inst.Node)
			}
			if _, ok := appByID[inst.AppID]; ok {
				plan.Events = append(plan.Events, Event{AppID: inst.AppID, Kind: EventLost,
					Message: fmt.Sprintf("instance %s (index %d, release v%d) lost with node %s; replacing", inst.ID, inst.Index, inst.Release, inst.Node)})
			}
			continue
		case inst.State == StateStopping || inst.State == StateLost:
			if inst.State == StateLost || !in.Now.Before(inst.UpdatedAt.Add(in.DrainPeriod)) {
				plan.Delete = append(plan.Delete, inst)
				continue
			}
		case n.Heartbeat != nil:
			inst = observe(inst, n.Heartbeat, in.Now)
		}
		cp := inst
		work = append(work, &cp)
	}

	// The reservation ledger counts every surviving row, pending ones
	// included: what was placed a moment ago is not placed twice.
	var pnodes []placement.Node
	for _, id := range nodeIDs {
		n := nodes[id]
		pnodes = append(pnodes, placement.Node{
			ID: id, Labels: n.Labels, CapacityMB: n.Capacity.MemoryMB,
			Schedulable: !lost[id] && !n.Drain && n.Heartbeat != nil,
		})
	}
	ledger := placement.New(pnodes, in.ReserveMB)
	for _, inst := range work {
		ledger.Reserve(inst.Node, appName(appByID, inst.AppID), memoryOf(appByID, inst))
	}

	healthy := func(inst *Instance) bool {
		return inst.State == StateRunning && in.Health[inst.ID].Status == common.Healthy
	}
	stop := func(inst *Instance) {
		inst.State = StateStopping
		inst.UpdatedAt = in.Now
	}

	byApp := map[int64][]*Instance{}
	for _, inst := range work {
		if inst.State == StateStopping {
			continue
		}
		if _, ok := appByID[inst.AppID]; !ok {
			stop(inst) // app deleted under us
			continue
		}
		byApp[inst.AppID] = append(byApp[inst.AppID], inst)
	}

	var created []*Instance
	for i := range apps {
		app := &apps[i]
		live := byApp[app.ID]
		rel, hasRel := app.Releases[app.CurrentRelease]
		if app.CurrentRelease == 0 || app.Instances <= 0 || !hasRel {
			for _, inst := range live {
				stop(inst)
			}
			if len(live) > 0 {
				plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventScale,
					Message: fmt.Sprintf("stopping %d instance(s): no instance wanted", len(live))})
			}
			continue
		}
		var cur, old []*Instance
		for _, inst := range live {
			if inst.Release == app.CurrentRelease {
				cur = append(cur, inst)
			} else {
				old = append(old, inst)
			}
		}

		// Scale down: the least useful go first — not serving (failed,
		// pending, unhealthy), then the highest index.
		if extra := len(cur) - app.Instances; extra > 0 {
			sort.SliceStable(cur, func(a, b int) bool {
				ha, hb := healthy(cur[a]), healthy(cur[b])
				if ha != hb {
					return !ha
				}
				if cur[a].Index != cur[b].Index {
					return cur[a].Index > cur[b].Index
				}
				return cur[a].ID < cur[b].ID
			})
			for _, inst := range cur[:extra] {
				stop(inst)
			}
			plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventScale,
				Message: fmt.Sprintf("scaling down to %d: stopping %d instance(s)", app.Instances, extra)})
			cur = cur[extra:]
		}

		// Place what is missing, one instance per free index.
		used := map[int]bool{}
		for _, inst := range cur {
			used[inst.Index] = true
		}
		for idx := 0; len(cur) < app.Instances; idx++ {
			if used[idx] {
				continue
			}
			node, err := ledger.Place(app.Name, rel.MemoryMB, app.Constraints)
			if err != nil {
				plan.Unplaced[app.ID] = fmt.Sprintf("cannot place %d instance(s) of release v%d: %v",
					app.Instances-len(cur), app.CurrentRelease, err)
				break
			}
			inst := &Instance{ID: in.NewID(), AppID: app.ID, Release: app.CurrentRelease, Index: idx,
				Node: node, State: StatePending, CreatedAt: in.Now, UpdatedAt: in.Now}
			used[idx] = true
			cur = append(cur, inst)
			created = append(created, inst)
		}

		// Rolling deploy: older releases keep serving until the current one
		// has every wanted instance running and healthy.
		if len(old) > 0 {
			n := 0
			for _, inst := range cur {
				if healthy(inst) {
					n++
				}
			}
			if n >= app.Instances {
				for _, inst := range old {
					stop(inst)
				}
				plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventDeploy,
					Message: fmt.Sprintf("release v%d healthy on %d instance(s); stopping %d old instance(s)", app.CurrentRelease, n, len(old))})
			} else if rb, ok := rollback(app, cur, old, n, in.Now, in.StartTimeout); ok {
				plan.Rollbacks = append(plan.Rollbacks, rb)
			}
		}
	}

	// Diff the surviving rows against what was read.
	for _, inst := range work {
		if o := orig[inst.ID]; !sameRow(o, *inst) {
			plan.Update = append(plan.Update, *inst)
		}
	}
	for _, inst := range created {
		plan.Create = append(plan.Create, *inst)
	}
	all := append(append([]*Instance(nil), work...), created...)

	// Routes: every running instance with a host port, stopping ones out.
	for i := range apps {
		app := &apps[i]
		if _, ok := app.Releases[app.CurrentRelease]; app.CurrentRelease == 0 || app.Instances <= 0 || !ok {
			continue
		}
		backends := []common.Backend{}
		for _, inst := range all {
			if inst.AppID != app.ID || inst.State != StateRunning || inst.HostPort <= 0 {
				continue
			}
			n := nodes[inst.Node]
			if n == nil || n.Addr == "" {
				continue
			}
			backends = append(backends, common.Backend{
				Addr:     fmt.Sprintf("%s:%d", n.Addr, inst.HostPort),
				Instance: inst.ID, Index: inst.Index, Release: inst.Release,
				Healthy: in.Health[inst.ID].Status == common.Healthy,
			})
		}
		sort.Slice(backends, func(a, b int) bool {
			x, y := backends[a], backends[b]
			if x.Release != y.Release {
				return x.Release < y.Release
			}
			if x.Index != y.Index {
				return x.Index < y.Index
			}
			return x.Instance < y.Instance
		})
		plan.Routes[common.AppHost(app.Name, in.Domain)] = common.Route{
			App: app.Name, Release: app.CurrentRelease, Backends: backends,
			Health: app.Health, Balance: app.Balance, Sticky: app.Sticky,
		}
	}

	// Assignments: every row on a node, stopping ones until they are deleted.
	for _, id := range nodeIDs {
		plan.Assignments[id] = []common.Assignment{}
	}
	for _, inst := range all {
		app := appByID[inst.AppID]
		if app == nil {
			continue // deleted app: unassigning removes its container
		}
		rel, ok := app.Releases[inst.Release]
		if !ok {
			continue
		}
		if _, ok := plan.Assignments[inst.Node]; !ok {
			continue
		}
		plan.Assignments[inst.Node] = append(plan.Assignments[inst.Node], common.Assignment{
			Instance: inst.ID, App: app.Name, Release: inst.Release, Index: inst.Index,
			Image: rel.Image, MemoryMB: rel.MemoryMB, CPUShares: rel.CPUShares,
			Port: common.DefaultAppPort, Env: rel.Env,
		})
	}
	for _, list := range plan.Assignments {
		sort.Slice(list, func(a, b int) bool {
			x, y := list[a], list[b]
			if x.App != y.App {
				return x.App < y.App
			}
			if x.Release != y.Release {
				return x.Release < y.Release
			}
			if x.Index != y.Index {
				return x.Index < y.Index
			}
			return x.Instance < y.Instance
		})
	}
	return plan
}

// rollback decides whether a deploy that is still not healthy has run out of
// time. The target is the newest older release that still has instances (it
// is serving, so going back to it is safe).
func rollback(app *App, cur, old []*Instance, healthy int, now time.Time, timeout time.Duration) (Rollback, bool) {
	if timeout <= 0 || len(cur) == 0 {
		return Rollback{}, false
	}
	started := cur[0].CreatedAt
	for _, inst := range cur[1:] {
		if inst.CreatedAt.Before(started) {
			started = inst.CreatedAt
		}
	}
	if now.Sub(started) < timeout {
		return Rollback{}, false
	}
	to := 0
	for _, inst := range old {
		if _, ok := app.Releases[inst.Release]; ok && inst.Release > to && inst.Release < app.CurrentRelease {
			to = inst.Release
		}
	}
	if to == 0 {
		return Rollback{}, false
	}
	return Rollback{AppID: app.ID, App: app.Name, From: app.CurrentRelease, To: to,
		Reason: fmt.Sprintf("release v%d not healthy after %s (%d/%d healthy); rolling back to v%d",
			app.CurrentRelease, timeout, healthy, app.Instances, to)}, true
}

// observe folds the node's heartbeat into an instance row. The heartbeat is
// authoritative: a container missing from it is gone.
func observe(inst Instance, hb *common.Heartbeat, now time.Time) Instance {
	before := inst
	var c *common.Container
	for i := range hb.Containers {
		if hb.Containers[i].Instance == inst.ID {
			c = &hb.Containers[i]
			break
		}
	}
	switch {
	case c == nil:
		// Not created yet, or gone: the agent (re)creates it.
		inst.State = StatePending
		inst.HostPort = 0
		inst.ContainerID = ""
	case c.State == common.StateRunning:
		inst.State = StateRunning
		inst.HostPort = c.HostPort
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		inst.Error = ""
		if !c.StartedAt.IsZero() {
			inst.StartedAt = c.StartedAt.UTC().Truncate(time.Microsecond)
		}
	case c.Error != "" || c.State == common.StateExited || c.State == common.StateDead:
		// Keep it assigned: the agent restarts it with backoff.
		inst.State = StateFailed
		inst.HostPort = 0
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		switch {
		case c.Error != "":
			inst.Error = c.Error
		case c.State == common.StateDead:
			inst.Error = "container dead"
		default:
			inst.Error = fmt.Sprintf("exited with code %d", c.ExitCode)
		}
	default:
		inst.State = StatePending
		inst.HostPort = 0
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
	}
	if len(inst.Error) > maxErrorLen {
		inst.Error = inst.Error[:maxErrorLen]
	}
	if !sameRow(before, inst) {
		inst.UpdatedAt = now
	}
	return inst
}

// sameRow reports whether two rows hold the same content (UpdatedAt aside).
func sameRow(a, b Instance) bool {
	return a.ID == b.ID && a.AppID == b.AppID && a.Release == b.Release && a.Index == b.Index &&
		a.Node == b.Node && a.State == b.State && a.HostPort == b.HostPort &&
		a.ContainerID == b.ContainerID && a.Restarts == b.Restarts && a.Error == b.Error &&
		a.StartedAt.Equal(b.StartedAt)
}

func appName(apps map[int64]*App, id int64) string {
	if a := apps[id]; a != nil {
		return a.Name
	}
	return fmt.Sprintf("app-%d", id)
}

func memoryOf(apps map[int64]*App, inst *Instance) int64 {
	if a := apps[inst.AppID]; a != nil {
		return a.Releases[inst.Release].MemoryMB
	}
	return 0
}
